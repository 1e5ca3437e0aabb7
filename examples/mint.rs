//! Signs many distinct tokens with a server's own key ring, so `make bench`
//! can verify tokens that were never seen before (no cache stands in for
//! the work). Reads the same settings as the server.
//!
//!     mint CLIENT AUDIENCE COUNT [once] > tokens.txt

use auth_jit::services::keys::{KeyRing, RingPolicy};
use auth_jit::services::store::StoreHandle;
use auth_jit::settings::Settings;
use auth_jit::token::claims::AccessClaims;
use auth_jit::token::clock::{Clock, SystemClock, SystemRandom};
use auth_jit::token::issue::new_jti;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, client, audience, count, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: mint CLIENT AUDIENCE COUNT [once]");
    };
    let count: usize = count.parse()?;
    let once = rest.first().is_some_and(|a| a == "once");
    let settings = Settings::load(None)?;
    let store = if settings.uses_redis() {
        Some(StoreHandle::open(&settings).await?)
    } else {
        None
    };
    let ring = KeyRing::open(&settings, store.as_ref());
    let now = SystemClock.now();
    let keys = ring.key_set(&RingPolicy::new(&settings, []), now).await?;
    let key = keys
        .active()
        .ok_or_else(|| anyhow::anyhow!("no signing key yet: start the server first"))?;
    let random = SystemRandom::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..count {
        let claims = AccessClaims {
            iss: settings.issuer.clone(),
            sub: client.clone(),
            aud: audience.clone(),
            exp: now + 3600,
            iat: now,
            nbf: now,
            jti: new_jti(&random)?,
            client_id: client.clone(),
            scope: Some("read".into()),
            once: once.then_some(true),
            htm: None,
            htu: None,
            act: None,
        };
        let token = key.sign(&claims)?;
        std::io::Write::write_all(&mut out, token.as_bytes())?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    Ok(())
}
