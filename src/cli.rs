//! The command line: `serve` (the default) and the operator commands. Every
//! command reads the same settings as the server. Command results go to
//! stdout (only the secret, for `client add`); everything else to stderr.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::services::clients::{ClientEntry, ClientsFile};
use crate::services::keys::{KeyRing, RingPolicy};
use crate::services::store::StoreHandle;
use crate::settings::Settings;
use crate::token::assertion::ClientKey;
use crate::token::clock::{Clock, SystemClock, SystemRandom};
use crate::token::jws::SigningAlg;
use crate::token::types::{Audience, ClientId, ScopeToken};

#[derive(Debug, Parser)]
#[command(
    name = "auth-jit",
    version,
    about = "Just-in-time tokens for backend APIs"
)]
pub struct Cli {
    /// A TOML config file (also AUTH_JIT_CONFIG); environment variables win.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage registered clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Inspect, rotate and revoke signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Settings of one audience (the algorithm its tokens are signed with).
    #[command(subcommand)]
    Audience(AudienceCommand),
    /// Print every setting as AUTH_JIT_NAME=value (secrets redacted).
    Settings,
    /// Exit 0 if the server on AUTH_JIT_PORT answers /api/health with 200
    /// (for container health checks, where there is no curl).
    Healthcheck,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its new secret alone on stdout (nothing
    /// with --public-key).
    Add(AddArgs),
    /// List registered clients.
    List,
    /// Remove a client; its tokens stop verifying.
    Remove { id: ClientId },
    /// Revoke every token issued to a client up to now.
    RevokeTokens { id: ClientId },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub id: ClientId,
    /// Audiences the client may request tokens for.
    #[arg(long = "audience", required = true, num_args = 1..)]
    pub audiences: Vec<Audience>,
    /// Scopes the client may request.
    #[arg(long = "scope", num_args = 1..)]
    pub scopes: Vec<ScopeToken>,
    /// The client's own ceiling on token lifetime, in seconds.
    #[arg(long)]
    pub max_ttl: Option<u64>,
    /// Allow token exchange (RFC 8693).
    #[arg(long)]
    pub exchange: bool,
    /// Allow Transaction Tokens for the trust domain (AUTH_JIT_TRUST_DOMAIN).
    #[arg(long)]
    pub txn_token: bool,
    /// Audiences this client serves (besides its own id): it may verify,
    /// introspect, revoke and exchange tokens addressed to them.
    #[arg(long = "receives", num_args = 1..)]
    pub receives: Vec<Audience>,
    /// Token requests per second for this client (0: unlimited).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Register a `private_key_jwt` client by its public key (a PEM public
    /// key or a public JWK) instead of a secret; nothing is printed.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys: kid, algorithm, not-before, state (next, active,
    /// retired, expired, revoked).
    List,
    /// Add the next key of every algorithm in use. It is published at once
    /// and signs after AUTH_JIT_KEY_PUBLISH_SECS (so verifiers have it
    /// cached first); the current key keeps verifying until its tokens
    /// have expired. Prints the new kids on stdout.
    Rotate {
        /// Sign with the new key at once (a compromised key): then `keys
        /// revoke` the old one to refuse its tokens too.
        #[arg(long)]
        now: bool,
    },
    /// End a key at once: every instance stops publishing and trusting it
    /// within about a second, and every token it signed is refused. The key
    /// that signs now cannot be revoked before a successor signs (`keys
    /// rotate --now`).
    Revoke {
        /// A `kid` is base64url, so it may begin with `-`: taken as is.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AudienceCommand {
    /// Sign tokens for AUDIENCE with ALG (EdDSA, ES256, RS256, PS256), or
    /// with AUTH_JIT_SIGNING_ALG again (`default`). Running servers pick it
    /// up within a second and create the algorithm's first key if needed.
    Set {
        audience: Audience,
        #[arg(long, value_name = "ALG")]
        signing_alg: String,
    },
    /// List audiences with settings of their own.
    List,
}

/// Runs an operator command (not `serve`).
pub async fn run_command(settings: &Settings, command: Command) -> anyhow::Result<()> {
    let path = &settings.clients_file;
    match command {
        Command::Serve => unreachable_serve(),
        Command::Client(ClientCommand::Add(args)) => {
            if let Some(max) = args.max_ttl {
                if max == 0 || max > settings.max_ttl {
                    anyhow::bail!(
                        "--max-ttl must be between 1 and AUTH_JIT_MAX_TTL ({})",
                        settings.max_ttl
                    );
                }
            }
            let _lock = ClientsFile::lock(path)?;
            let mut file = ClientsFile::read(path)?;
            let entry = ClientEntry {
                id: args.id.clone(),
                secret_sha256: None,
                public_jwk: None,
                audiences: args.audiences.into_iter().collect(),
                scopes: args.scopes.into_iter().collect(),
                max_ttl: args.max_ttl,
                exchange: args.exchange,
                txn_token: args.txn_token,
                rate_limit: args.rate_limit,
                receives: args.receives.into_iter().collect(),
                tokens_revoked_before: None,
            };
            match args.public_key {
                Some(key_file) => {
                    let bytes = std::fs::read(&key_file)
                        .map_err(|e| anyhow::anyhow!("--public-key {}: {e}", key_file.display()))?;
                    let key = if bytes.trim_ascii_start().starts_with(b"{") {
                        ClientKey::from_jwk_json(&String::from_utf8_lossy(&bytes))
                    } else {
                        ClientKey::from_pem(&bytes)
                    }
                    .map_err(|e| anyhow::anyhow!("--public-key {}: {e}", key_file.display()))?;
                    file.add_with_key(entry, &key)?;
                    file.write(path)?;
                    eprintln!(
                        "client {} added to {} with an {} public key (private_key_jwt); no secret",
                        args.id,
                        path.display(),
                        key.alg_name()
                    );
                }
                None => {
                    let secret = file.add(entry, &SystemRandom::new())?;
                    file.write(path)?;
                    eprintln!(
                        "client {} added to {}; its secret (shown once):",
                        args.id,
                        path.display()
                    );
                    println!("{secret}");
                }
            }
        }
        Command::Client(ClientCommand::List) => {
            let file = ClientsFile::read(path)?;
            if file.clients.is_empty() {
                eprintln!("no clients in {}", path.display());
            }
            for c in &file.clients {
                let join = |v: Vec<String>| {
                    if v.is_empty() {
                        "-".to_owned()
                    } else {
                        v.join(",")
                    }
                };
                println!(
                    "{}\taudiences={}\tscopes={}\tmax_ttl={}\texchange={}{}{}",
                    c.id,
                    join(c.audiences.iter().map(ToString::to_string).collect()),
                    join(c.scopes.iter().map(ToString::to_string).collect()),
                    c.max_ttl.map_or_else(|| "-".into(), |t| t.to_string()),
                    c.exchange,
                    if c.txn_token { "\ttxn_token=true" } else { "" },
                    c.tokens_revoked_before
                        .map_or_else(String::new, |t| format!("\ttokens_revoked_before={t}")),
                );
            }
        }
        Command::Client(ClientCommand::Remove { id }) => {
            let _lock = ClientsFile::lock(path)?;
            let mut file = ClientsFile::read(path)?;
            file.remove(&id)?;
            file.write(path)?;
            eprintln!("client {id} removed");
        }
        Command::Client(ClientCommand::RevokeTokens { id }) => {
            let now = SystemClock.now();
            let _lock = ClientsFile::lock(path)?;
            let mut file = ClientsFile::read(path)?;
            file.revoke_tokens(&id, now)?;
            file.write(path)?;
            // With Redis, also record the cut-off where every instance sees
            // it at once, whatever copy of the clients file it has.
            if settings.uses_redis() {
                let store = StoreHandle::open(settings).await?;
                // Kept past any token that could still verify anywhere.
                let keep_until = now + crate::settings::MAX_TTL_CEILING + 2 * settings.leeway + 60;
                store
                    .revoke_client(id.as_str(), now, keep_until)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("recorded in the clients file, but not in Redis: {e}")
                    })?;
            }
            eprintln!("every token issued to {id} up to now is revoked");
        }
        Command::Settings => {
            for (name, value) in settings.describe() {
                println!("{name}={value}");
            }
        }
        Command::Healthcheck => healthcheck(settings).await?,
        Command::Keys(command) => keys_command(settings, command).await?,
        Command::Audience(AudienceCommand::Set {
            audience,
            signing_alg,
        }) => {
            let alg = match signing_alg.as_str() {
                "default" => None,
                name => Some(SigningAlg::parse(name).ok_or_else(|| {
                    anyhow::anyhow!("--signing-alg: expected EdDSA, ES256, RS256, PS256 or default")
                })?),
            };
            let _lock = ClientsFile::lock(path)?;
            let mut file = ClientsFile::read(path)?;
            file.set_audience_alg(&audience, alg);
            file.write(path)?;
            match alg {
                Some(alg) => eprintln!("tokens for {audience} are signed with {alg}"),
                None => eprintln!(
                    "tokens for {audience} are signed with AUTH_JIT_SIGNING_ALG ({})",
                    settings.signing_alg
                ),
            }
        }
        Command::Audience(AudienceCommand::List) => {
            for a in ClientsFile::read(path)?.audiences {
                println!("{}	signing_alg={}", a.id, a.signing_alg);
            }
        }
    }
    Ok(())
}

/// `auth-jit keys ...`: the same ring the servers use (Redis, or
/// `DATA_DIR/keys`), changed by the same compare-and-set.
async fn keys_command(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    let store = if settings.uses_redis() {
        Some(StoreHandle::open(settings).await?)
    } else {
        None
    };
    let ring = KeyRing::open(settings, store.as_ref());
    let file = ClientsFile::read(&settings.clients_file)?;
    let policy = RingPolicy::new(settings, file.audiences.iter().map(|a| a.signing_alg));
    let now = SystemClock.now();
    match command {
        KeysCommand::Rotate { now: urgent } => {
            for (kid, alg, not_before) in ring.rotate(&policy, now, urgent).await? {
                eprintln!(
                    "next {alg} key {kid} added to {}; published now, signs from {not_before} (in {} s)",
                    ring.describe(),
                    not_before.saturating_sub(now),
                );
                println!("{kid}");
            }
        }
        KeysCommand::Revoke { kid } => {
            if ring.revoke(&policy, &kid, now).await? {
                eprintln!("key {kid} revoked: every instance stops publishing and trusting it within about a second");
            } else {
                eprintln!("key {kid} was revoked already");
            }
        }
        KeysCommand::List => {
            let keys = ring.list(&policy, now).await?;
            if keys.is_empty() {
                eprintln!(
                    "no keys yet in {}: the server creates one on first start",
                    ring.describe()
                );
            }
            for k in keys {
                println!(
                    "{}\t{}\tnot_before={}\t{}{}{}",
                    k.kid,
                    k.alg,
                    k.not_before,
                    k.state.as_str(),
                    if k.encrypted { "\tencrypted" } else { "" },
                    k.revoked_at
                        .map_or_else(String::new, |t| format!("\trevoked_at={t}")),
                );
            }
        }
    }
    Ok(())
}

fn unreachable_serve() {
    // `main` runs `serve` itself; nothing to do here.
}

/// GET /api/health on the configured port, over loopback when the server
/// listens on all interfaces. Plain HTTP/1.1 over a socket: the status line
/// is all that matters, and it keeps an HTTP client out of the binary.
async fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = if settings.host.is_unspecified() {
        match settings.host {
            std::net::IpAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::V6(_) => std::net::IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
        }
    } else {
        settings.host
    };
    let addr = std::net::SocketAddr::new(host, settings.port);
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), check).await {
        Ok(Ok(head)) if head.starts_with(b"HTTP/1.1 200") => {
            eprintln!("healthy: {addr}");
            Ok(())
        }
        Ok(Ok(head)) => anyhow::bail!(
            "unhealthy: {addr} answered {}",
            String::from_utf8_lossy(&head).trim()
        ),
        Ok(Err(e)) => anyhow::bail!("unhealthy: {addr}: {e}"),
        Err(_) => anyhow::bail!("unhealthy: {addr} did not answer within 3 s"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_kid_that_begins_with_a_dash_is_a_kid() {
        // One thumbprint in 64 begins with `-` (base64url).
        let cli = Cli::try_parse_from(["auth-jit", "keys", "revoke", "-zF3a_kid"]);
        match cli.map(|c| c.command) {
            Ok(Some(Command::Keys(KeysCommand::Revoke { kid }))) => assert_eq!(kid, "-zF3a_kid"),
            other => panic!("{other:?}"),
        }
    }
}
