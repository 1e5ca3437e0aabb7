//! The key ring of the embedded store: one file per key in `DATA_DIR/keys`,
//! PKCS#8 DER, mode 0600, named `<not-before>-<alg>-<kid prefix>.p8` (or
//! `.p8.enc`, sealed under the key-encryption key with the file name as
//! associated data). A revoked key's file is deleted and replaced by
//! `<kid>.revoked`, which keeps it listed and never trusted again.
//!
//! Writers (the server, `auth-jit keys ...`) take an exclusive lock on
//! `keys/.lock` and re-check the directory's listing before they write, so
//! two of them cannot both add "the" next key.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{seal, Change, KeyRecord, KeysError, Material};
use crate::settings::KeyEncryptionKey;
use crate::token::jws::SigningAlg;

pub struct DirRing {
    dir: PathBuf,
    kek: Option<KeyEncryptionKey>,
    /// Reading an old directory to import it: plaintext keys are expected
    /// there (a Redis deployment before keys moved into the store).
    importing: bool,
}

/// What a `.revoked` marker holds.
#[derive(Serialize, Deserialize)]
struct Marker {
    kid: String,
    alg: SigningAlg,
    not_before: u64,
    revoked_at: u64,
}

fn io_error_at(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DirRing {
    pub fn new(dir: PathBuf, kek: Option<KeyEncryptionKey>) -> Self {
        Self {
            dir,
            kek,
            importing: false,
        }
    }

    /// A directory read once, to import its keys into the shared ring.
    pub fn importing(dir: PathBuf, kek: Option<KeyEncryptionKey>) -> Self {
        Self {
            dir,
            kek,
            importing: true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A cheap fingerprint of the directory (names and sizes): it changes
    /// whenever a key is added, revoked or deleted.
    pub fn version(&self) -> Result<String, KeysError> {
        if !self.dir.exists() {
            return Ok(String::new());
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error_at(&self.dir))? {
            let entry = entry.map_err(io_error_at(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_ring_file(&name) {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                names.push(format!("{name}:{len}"));
            }
        }
        names.sort();
        Ok(names.join("\n"))
    }

    pub fn load(&self) -> Result<(String, Vec<KeyRecord>), KeysError> {
        let version = self.version()?;
        let mut records = Vec::new();
        if version.is_empty() {
            return Ok((version, records));
        }
        for entry in fs::read_dir(&self.dir).map_err(io_error_at(&self.dir))? {
            let path = entry.map_err(io_error_at(&self.dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if name.ends_with(".revoked") {
                let text = fs::read(&path).map_err(io_error_at(&path))?;
                let marker: Marker =
                    serde_json::from_slice(&text).map_err(|_| KeysError::Invalid(path.clone()))?;
                records.push(KeyRecord {
                    id: name,
                    kid: Some(marker.kid),
                    alg: marker.alg,
                    not_before: marker.not_before,
                    revoked_at: Some(marker.revoked_at),
                    material: None,
                    location: path.display().to_string(),
                });
                continue;
            }
            let (stem, encrypted) = if let Some(stem) = name.strip_suffix(".p8.enc") {
                (stem, true)
            } else if let Some(stem) = name.strip_suffix(".p8") {
                (stem, false)
            } else {
                continue;
            };
            // `<not-before>-<alg>` or `<not-before>-<alg>-<tag>`.
            let mut parts = stem.splitn(3, '-');
            let Some((not_before, alg)) = parts
                .next()
                .zip(parts.next())
                .and_then(|(ts, alg)| Some((ts.parse::<u64>().ok()?, SigningAlg::parse(alg)?)))
            else {
                return Err(KeysError::Invalid(path));
            };
            match (encrypted, &self.kek) {
                (true, None) => return Err(KeysError::NeedsKek(path.display().to_string())),
                (false, Some(_)) if !self.importing => return Err(KeysError::Plaintext(path)),
                _ => {}
            }
            let bytes = fs::read(&path).map_err(io_error_at(&path))?;
            records.push(KeyRecord {
                kid: None,
                alg,
                not_before,
                revoked_at: None,
                material: Some(Material {
                    bytes,
                    aad: name.clone(),
                    encrypted,
                }),
                location: path.display().to_string(),
                id: name,
            });
        }
        Ok((version, records))
    }

    /// Applies `changes` if the directory still is at `expected`; `false`
    /// when another writer got there first.
    pub fn commit(&self, expected: &str, changes: &[Change]) -> Result<bool, KeysError> {
        super::create_private_dir(&self.dir)?;
        let lock_path = self.dir.join(".lock");
        let mut options = fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let lock = options.open(&lock_path).map_err(io_error_at(&lock_path))?;
        lock.lock().map_err(io_error_at(&lock_path))?;
        if self.version()? != expected {
            return Ok(false);
        }
        for change in changes {
            match change {
                Change::Add(new) => {
                    let tag: String = new.kid.chars().take(8).collect();
                    let name = match self.kek {
                        Some(_) => format!("{}-{}-{tag}.p8.enc", new.not_before, new.alg),
                        None => format!("{}-{}-{tag}.p8", new.not_before, new.alg),
                    };
                    let path = self.dir.join(&name);
                    let contents = match &self.kek {
                        Some(kek) => seal::seal(kek, &name, &new.pkcs8)
                            .ok_or(KeysError::Internal("sealing a key failed"))?,
                        None => new.pkcs8.clone(),
                    };
                    write_atomically(&self.dir, &path, &contents)?;
                }
                Change::Revoke { record, at } => {
                    let kid = record
                        .kid
                        .clone()
                        .ok_or(KeysError::Internal("revoking a key of unknown kid"))?;
                    let marker = Marker {
                        kid: kid.clone(),
                        alg: record.alg,
                        not_before: record.not_before,
                        revoked_at: *at,
                    };
                    let path = self.dir.join(format!("{kid}.revoked"));
                    let body = serde_json::to_vec(&marker).map_err(|_| {
                        KeysError::Internal("a revocation marker does not serialize")
                    })?;
                    if !path.exists() {
                        write_atomically(&self.dir, &path, &body)?;
                    }
                    if record.material.is_some() {
                        let key_file = self.dir.join(&record.id);
                        fs::remove_file(&key_file).map_err(io_error_at(&key_file))?;
                    }
                }
                Change::Drop { id } => {
                    let path = self.dir.join(id);
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error_at(&path)(e)),
                    }
                }
            }
        }
        Ok(true)
    }
}

/// Marks the directory as imported into the shared ring, so it is never
/// imported again (say after the ring was deleted to start anew).
const IMPORTED: &str = ".imported";

impl DirRing {
    pub fn is_imported(&self) -> bool {
        self.dir.join(IMPORTED).exists()
    }

    pub fn mark_imported(&self) -> Result<(), KeysError> {
        let path = self.dir.join(IMPORTED);
        let text = "these keys were imported into the shared key ring; they are not read again\n";
        match write_private_file(&path, text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io_error_at(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// Writes a key or marker under a temporary name, then renames it into
/// place, so a reader never sees half a file (temporary names end in none
/// of the suffixes the ring reads).
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), KeysError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    write_private_file(&tmp, contents).map_err(io_error_at(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error_at(path))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn is_ring_file(name: &str) -> bool {
    name.ends_with(".p8") || name.ends_with(".p8.enc") || name.ends_with(".revoked")
}

/// Writes a new file readable by the owner only; never overwrites.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
