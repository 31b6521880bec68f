//! Image files on a remote host as [`Storage`], and the [`Opener`] that
//! opens a chain there: every layer through the same SFTP session, backing
//! files resolved on the remote host the way qemu resolves them (relative
//! to the overlay's directory there).
use std::io;
use std::sync::{Arc, Mutex};

use super::client::Session;
use super::link::Fault;
use super::proto;
use crate::block::chain::{resolve_backing, FileId, Opened, Opener};
use crate::block::storage::Storage;
use crate::block::storage_cache::{CachedStorage, ChunkCache};
use crate::block::BlockError;

/// Bytes of remote file content kept per session, so no round trip is paid
/// twice for the same bytes (small reads: metadata, directory blocks).
pub const CACHE_BYTES: u64 = 64 << 20;

/// One remote file, opened read-only.
pub struct SftpFile {
    session: Arc<Session>,
    /// `ssh://host/path` as the chain names it.
    name: String,
    /// The canonical remote path (reopened by it after a reconnection).
    real: String,
    len: u64,
    /// The handle and the link generation it belongs to.
    handle: Mutex<Option<(u64, Vec<u8>)>>,
}

impl SftpFile {
    /// The handle valid on `link`, reopening the file after a
    /// reconnection (and refusing a file whose size changed).
    fn handle_for(&self, link: &super::link::Link, generation: u64) -> Result<Vec<u8>, Fault> {
        let mut h = self.handle.lock().map_err(|_| Fault::Link {
            kind: io::ErrorKind::Other,
            message: "SFTP handle lock poisoned".into(),
        })?;
        if let Some((g, handle)) = h.as_ref() {
            if *g == generation {
                return Ok(handle.clone());
            }
        }
        let (_, attrs, handle) = self.session.open_on(link, &self.real)?;
        if attrs.size != Some(self.len) {
            self.session.close_on(link, &handle);
            return Err(Fault::Status {
                code: proto::FX_FAILURE,
                message: format!(
                    "{} changed size from {} to {} bytes while layerscope was reading it",
                    self.real,
                    self.len,
                    attrs.size.map_or("unknown".to_owned(), |s| s.to_string())
                ),
            });
        }
        *h = Some((generation, handle.clone()));
        Ok(handle)
    }
}

impl Storage for SftpFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = u64::try_from(buf.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of {}", self.name),
            ));
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.read_many(&mut [(offset, buf)])
    }

    /// All ranges' READ requests go out together (up to the window), so a
    /// batch of tables costs about one round trip.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        for (offset, buf) in reqs.iter() {
            let n = u64::try_from(buf.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
            if offset.checked_add(n).is_none_or(|end| end > self.len) {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read past the end of {}", self.name),
                ));
            }
        }
        self.session
            .run(|link, generation| {
                let handle = self.handle_for(link, generation)?;
                self.session.read_on(link, &handle, reqs)
            })
            .map_err(|f| f.to_io())
    }

    /// SFTP v3 cannot ask where a file's holes are: all of it is data (as
    /// with qemu's ssh driver).
    fn next_run(&self, _offset: u64) -> io::Result<Option<(bool, u64)>> {
        Ok(None)
    }

    /// SFTP v3 attributes carry no block count.
    fn allocated_size(&self) -> Option<u64> {
        None
    }

    fn remote(&self) -> bool {
        true
    }

    fn ssh_session(&self) -> Option<Arc<Session>> {
        Some(Arc::clone(&self.session))
    }
}

impl Drop for SftpFile {
    fn drop(&mut self) {
        if let (Some((link, generation)), Ok(Some((g, handle)))) = (
            self.session.current(),
            self.handle.lock().map(|h| h.clone()),
        ) {
            if g == generation {
                self.session.close_on(&link, &handle);
            }
        }
    }
}

/// Opens files of one host through one session.
pub struct SshOpener {
    session: Arc<Session>,
    /// `ssh://[user@]host[:port]`.
    authority: String,
    cache: Arc<ChunkCache>,
    /// The login directory, for `/~/…` paths (asked on first use).
    home: Mutex<Option<String>>,
    /// The open sent ahead ([`Opener::open_ahead`]), not answered yet.
    ahead: Mutex<Option<Ahead>>,
}

/// An open sent ahead: the remote path, on which link. One never taken
/// (the chain's open failed before its turn) keeps its handle on the
/// server until the session ends.
struct Ahead {
    path: String,
    link: Arc<super::link::Link>,
    generation: u64,
    pending: super::client::PendingOpen,
}

impl SshOpener {
    /// An opener over a connected session.
    pub fn new(session: Arc<Session>) -> SshOpener {
        SshOpener {
            authority: session.authority(),
            session,
            cache: Arc::new(ChunkCache::new(CACHE_BYTES)),
            home: Mutex::new(None),
            ahead: Mutex::new(None),
        }
    }

    /// The open sent ahead for remote `path`, taken (answered) when it is
    /// that file's on the live link; any other is closed. `None`: open it
    /// now.
    fn take_ahead(&self, path: &str) -> Option<(String, proto::Attrs, Vec<u8>, u64)> {
        let a = self.ahead.lock().ok()?.take()?;
        let live = self
            .session
            .current()
            .is_some_and(|(_, g)| g == a.generation);
        let answer = self.session.open_take(&a.link, a.pending);
        match answer {
            Ok((real, attrs, handle)) if live && a.path == path => {
                Some((real, attrs, handle, a.generation))
            }
            Ok((_, _, handle)) => {
                self.session.close_on(&a.link, &handle);
                None
            }
            // A refusal (no such file) or a broken link: the open below
            // meets it again and reports it as any open does.
            Err(_) => None,
        }
    }

    /// The session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The remote path of a layer name `ssh://host/path`; `/~/x` becomes
    /// `x` under the login directory.
    fn remote_path(&self, name: &str) -> Result<String, BlockError> {
        let path = name
            .strip_prefix(&self.authority)
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| {
                BlockError::unsupported(
                    name,
                    format!(
                        "not a file of {} (one ssh session per chain)",
                        self.authority
                    ),
                )
            })?;
        let Some(rest) = path
            .strip_prefix("/~")
            .filter(|r| r.is_empty() || r.starts_with('/'))
        else {
            return Ok(path.to_owned());
        };
        let mut home = self.home.lock().map_err(|_| BlockError::Internal {
            what: "ssh home lock poisoned".into(),
        })?;
        if home.is_none() {
            let h = self
                .session
                .realpath(".")
                .map_err(|f| self.fault(name, f))?;
            *home = Some(h);
        }
        let h = home.as_deref().unwrap_or(".");
        Ok(format!("{}{rest}", h.trim_end_matches('/')))
    }

    /// A fault as a block error naming the remote file.
    fn fault(&self, name: &str, f: Fault) -> BlockError {
        match f {
            Fault::Status { .. } => BlockError::Open {
                path: name.to_owned(),
                source: f.to_io(),
            },
            Fault::Link { .. } => BlockError::Connect {
                uri: name.to_owned(),
                source: f.to_io(),
            },
        }
    }
}

impl Opener for SshOpener {
    fn open(&self, name: &str) -> Result<Opened, BlockError> {
        let path = self.remote_path(name)?;
        let (real, attrs, handle, generation) = match self.take_ahead(&path) {
            Some(opened) => opened,
            None => self
                .session
                .run(|link, generation| {
                    let (real, attrs, handle) = self.session.open_on(link, &path)?;
                    Ok((real, attrs, handle, generation))
                })
                .map_err(|f| self.fault(name, f))?,
        };
        let refuse = |e: BlockError| {
            if let Some((link, g)) = self.session.current() {
                if g == generation {
                    self.session.close_on(&link, &handle);
                }
            }
            Err(e)
        };
        if attrs.is_dir() {
            return refuse(BlockError::IsDirectory {
                path: name.to_owned(),
            });
        }
        let Some(len) = attrs.size.filter(|_| attrs.is_regular_or_unknown()) else {
            return refuse(BlockError::unsupported(
                name,
                "not a regular file (SFTP gives no size for devices)",
            ));
        };
        let file = SftpFile {
            session: Arc::clone(&self.session),
            name: name.to_owned(),
            real: real.clone(),
            len,
            handle: Mutex::new(Some((generation, handle))),
        };
        let storage = CachedStorage::new(Arc::new(file), Arc::clone(&self.cache));
        Ok(Opened {
            storage: Arc::new(storage),
            id: FileId::Name(format!("{}{real}", self.authority)),
        })
    }

    /// An absolute backing name is a path on the same host; a relative one
    /// is joined to the overlay's remote directory, as qemu does.
    fn resolve_backing(&self, overlay: &str, name: &str) -> Result<String, BlockError> {
        if name.starts_with('/') {
            return Ok(format!("{}{name}", self.authority));
        }
        resolve_backing(overlay, name)
    }

    /// Sends the open of `name` on the live link (not reconnecting, not
    /// asking for the login directory): [`Opener::open`] takes its
    /// answer. An earlier one not taken is closed first.
    fn open_ahead(&self, name: &str) {
        let known_home = self.home.lock().is_ok_and(|h| h.is_some());
        let needs_home = name
            .strip_prefix(&self.authority)
            .is_some_and(|p| p == "/~" || p.starts_with("/~/"));
        if needs_home && !known_home {
            return;
        }
        let Ok(path) = self.remote_path(name) else {
            return;
        };
        let Some((link, generation)) = self.session.current() else {
            return;
        };
        if let Some(old) = self.ahead.lock().ok().and_then(|mut a| a.take()) {
            if let Ok((_, _, h)) = self.session.open_take(&old.link, old.pending) {
                self.session.close_on(&old.link, &h);
            }
        }
        if let Ok(pending) = self.session.open_send(&link, &path) {
            if let Ok(mut a) = self.ahead.lock() {
                *a = Some(Ahead {
                    path,
                    link,
                    generation,
                    pending,
                });
            }
        }
    }
}
