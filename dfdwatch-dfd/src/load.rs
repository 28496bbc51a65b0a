//! Finds DFD files on disk, parses and decodes them into one merged [`Dfd`] with every finding.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Finding, Loc};
use crate::model::Dfd;

/// Largest DFD file read (bytes); bigger files are reported, not read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why DFD sources could not be read at all (bad usage rather than a bad DFD).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path given on the command line does not exist.
    #[error("{}: no such file or directory", crate::escape::escape_path(path))]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A path is neither a regular file nor a directory (a FIFO would hang the reader, a device
    /// could be read without end).
    #[error("{}: not a regular file or directory", crate::escape::escape_path(path))]
    NotRegular {
        /// The path as given.
        path: PathBuf,
    },
    /// A directory contains no `.yaml`/`.yml` file.
    #[error("{}: directory holds no .yaml or .yml file", crate::escape::escape_path(path))]
    EmptyDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// No path was given.
    #[error("no DFD file or directory given")]
    NoPaths,
    /// A file or directory could not be read.
    #[error("{}: {source}", crate::escape::escape_path(path))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The merged DFD with every problem found while reading it.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The merged model (items with problems are left out).
    pub dfd: Dfd,
    /// Parse and decode findings (lints are not run here).
    pub findings: Vec<Finding>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Expands `paths` (files, or directories whose `.yaml`/`.yml` files are read in name order,
/// not recursively) into the list of files to read.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    if paths.is_empty() {
        return Err(LoadError::NoPaths);
    }
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound { path: p.clone() },
            _ => LoadError::Io { path: p.clone(), source },
        })?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|source| LoadError::Io { path: p.clone(), source })?;
            let mut found: Vec<PathBuf> = Vec::new();
            for entry in rd {
                let entry = entry.map_err(|source| LoadError::Io { path: p.clone(), source })?;
                let path = entry.path();
                let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if is_yaml && path.is_file() {
                    found.push(path);
                }
            }
            if found.is_empty() {
                return Err(LoadError::EmptyDirectory { path: p.clone() });
            }
            found.sort();
            files.extend(found);
        } else if meta.is_file() {
            files.push(p.clone());
        } else {
            return Err(LoadError::NotRegular { path: p.clone() });
        }
    }
    Ok(files)
}

/// One DFD file as read from disk: its path and its bytes, read once. The daemon hashes exactly
/// these bytes and parses exactly these bytes, so the revision it reports is the one it judges by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Its content, at most [`MAX_FILE_BYTES`] + 1 bytes (one more marks a file too large).
    pub bytes: Vec<u8>,
}

/// Reads every file under `paths` once (a file larger than [`MAX_FILE_BYTES`] is read only up to
/// one byte past the limit, so memory stays bounded; parsing reports it).
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>, LoadError> {
    use std::io::Read;
    let files = expand(paths)?;
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let io = |source| LoadError::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        sources.push(Source { path, bytes });
    }
    Ok(sources)
}

/// Parses and decodes sources read by [`read_sources`] into one DFD.
pub fn parse_sources(sources: &[Source]) -> Loaded {
    let mut loaded = Loaded::default();
    for source in sources {
        let file: Arc<Path> = Arc::from(source.path.as_path());
        if source.bytes.len() as u64 > MAX_FILE_BYTES {
            loaded.findings.push(Finding::new(
                "P007",
                Some(&Loc::file_start(&file)),
                format!("file is larger than {MAX_FILE_BYTES} bytes; split the DFD into several files"),
            ));
            continue;
        }
        match std::str::from_utf8(&source.bytes) {
            Ok(src) => add_source(&mut loaded.dfd, &mut loaded.findings, &file, src),
            Err(e) => loaded.findings.push(Finding::new(
                "P001",
                Some(&Loc::file_start(&file)),
                format!("file is not UTF-8 (invalid byte at offset {}); save it as UTF-8", e.valid_up_to()),
            )),
        }
    }
    loaded.files = sources.iter().map(|s| s.path.clone()).collect();
    loaded
}

/// Reads, parses and decodes every file under `paths` into one DFD.
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    Ok(parse_sources(&read_sources(paths)?))
}

/// Parses and decodes one source text named `file` into `dfd`.
pub fn add_source(dfd: &mut Dfd, findings: &mut Vec<Finding>, file: &Arc<Path>, src: &str) {
    let docs = crate::yaml::parse(src, file, findings);
    if docs.is_empty() && findings.is_empty() {
        findings.push(Finding::new(
            "P005",
            Some(&Loc::file_start(file)),
            "file holds no YAML document; add an ApprovedDataFlowDiagram or remove the file",
        ));
    }
    for doc in &docs {
        crate::decode::document(doc, dfd, findings);
    }
}

/// Parses and decodes one in-memory source (for tests, fuzzing and editors).
pub fn load_str(name: &str, src: &str) -> (Dfd, Vec<Finding>) {
    let file: Arc<Path> = Arc::from(Path::new(name));
    let mut dfd = Dfd::default();
    let mut findings = Vec::new();
    add_source(&mut dfd, &mut findings, &file, src);
    (dfd, findings)
}
