//! The client side of the management socket (`tsem-stream console`).

use std::fs;
use std::io::{self, BufReader, BufWriter, ErrorKind};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::wire::{self, Reply, Request, Sizes, WireError};
use super::MgmtError;

/// A connection to a workload's management socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    path: PathBuf,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, MgmtError> {
        let what = || format!("connecting to {}", path.display());
        let stream = UnixStream::connect(path).map_err(|source| MgmtError::Io {
            what: what(),
            source,
        })?;
        let writer = stream.try_clone().map_err(|source| MgmtError::Io {
            what: what(),
            source,
        })?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer: BufWriter::new(writer),
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and returns the ok payload, or the server's error
    /// message as [`MgmtError::Remote`].
    pub fn call(&mut self, request: &Request) -> Result<Vec<u8>, MgmtError> {
        let sent = wire::write_request(&mut self.writer, request);
        // A server that refuses the connection answers and closes at once; its
        // reply says more than the broken pipe of our write.
        let reply = wire::read_reply(&mut self.reader);
        match (sent, reply) {
            (_, Ok(Reply::Ok(payload))) => Ok(payload),
            (_, Ok(Reply::Error(message))) => Err(MgmtError::Remote(message)),
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(match e {
                WireError::Eof => MgmtError::Remote(format!(
                    "{} closed the connection without an answer",
                    self.path.display()
                )),
                e => e.into(),
            }),
        }
    }

    /// A view (see [`Request::View`]).
    pub fn view(&mut self, view: &str, prefix: bool, update: bool) -> Result<Vec<u8>, MgmtError> {
        self.call(&Request::view(view, prefix, update))
    }

    /// The numbers of valid and forensics points.
    pub fn sizes(&mut self) -> Result<Sizes, MgmtError> {
        let payload = self.call(&Request::Sizes)?;
        serde_json::from_slice(&payload)
            .map_err(|e| MgmtError::Remote(format!("malformed sizes reply: {e}")))
    }

    /// Seals the model.
    pub fn seal(&mut self) -> Result<(), MgmtError> {
        self.call(&Request::Seal).map(|_| ())
    }
}

/// The names of the workloads with a socket in `dir`, sorted; a missing
/// directory means none.
pub fn list_workloads(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_socket() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            if super::validate_name(name).is_ok() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}
