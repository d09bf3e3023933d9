//! One layer from blob to directory in a single pass: read, hash the compressed bytes,
//! decompress, hash the tar stream, unpack.
//!
//! Two threads per layer: one reads, hashes and decompresses, the other hashes the tar
//! stream and creates files; 1 MiB buffers travel between them and come back for reuse.
//! Decompression (zlib-rs for gzip, libzstd for zstd) and file creation each get a core,
//! which is what lets one big layer unpack faster than `pigz -dc | tar -x`. Several layers
//! run side by side under the store's control.

use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};

use super::digest::{Digest, HashingReader};
use super::oci::Compression;
use super::unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackStats};

const CHUNK: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the layer must turn out to be. `digest`/`size` are absent where the source names
/// no blob digest (a `docker save` archive); `diff_id` always comes from the image config.
#[derive(Debug, Clone)]
pub struct LayerExpect {
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    pub compression: Option<Compression>,
    pub diff_id: Digest,
}

#[derive(Debug, Clone)]
pub struct LayerOutcome {
    pub digest: Digest,
    pub size: u64,
    pub diff_size: u64,
    pub stats: UnpackStats,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("blob size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error("uncompressed layer digest {actual} does not match the config's diff_id {expected}")]
    DiffId { expected: Digest, actual: Digest },
    #[error("media type declares {declared:?} compression but the stream is {found:?}")]
    Compression { declared: Compression, found: Compression },
    #[error("reading or decompressing the blob: {0}")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// Streams `blob` into `dest` (an empty directory), verifying everything in `expect`.
pub fn apply(
    blob: Box<dyn Read + Send>,
    expect: &LayerExpect,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<LayerOutcome, LayerError> {
    let (data_tx, data_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT + 2);
    std::thread::scope(|s| {
        let producer = s.spawn(|| decompress(blob, expect, data_tx, spare_rx));
        let mut tar = HashingReader::new(
            ChannelReader {
                rx: data_rx,
                spare: spare_tx,
                cur: Vec::new(),
                pos: 0,
            },
            None,
        );
        let unpacked = unpack_layer(&mut tar, dest, opts);
        let drained = unpacked.is_ok().then(|| tar.finish());
        let produced = producer.join().expect("decompression thread panicked");
        // A broken or tampered blob is the root cause of whatever the unpacker saw.
        let (digest, size) = match produced? {
            Some(blob) => blob,
            None => return Err(unpacked.err().map(LayerError::Unpack).unwrap_or_else(hung_up)),
        };
        let stats = unpacked?;
        let (diff_id, diff_size) = drained.expect("drained after success").map_err(LayerError::Read)?;
        if diff_id != expect.diff_id {
            return Err(LayerError::DiffId {
                expected: expect.diff_id.clone(),
                actual: diff_id,
            });
        }
        Ok(LayerOutcome {
            digest,
            size,
            diff_size,
            stats,
        })
    })
}

fn hung_up() -> LayerError {
    LayerError::Read(io::Error::other("the unpacker stopped reading"))
}

/// The producer: returns the blob's digest and size, or `None` when the consumer hung up.
fn decompress(
    blob: Box<dyn Read + Send>,
    expect: &LayerExpect,
    tx: SyncSender<io::Result<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
) -> Result<Option<(Digest, u64)>, LayerError> {
    let mut raw = HashingReader::new(blob, expect.size);
    let mut magic = [0u8; 4];
    let got = read_full(&mut raw, &mut magic).map_err(LayerError::Read)?;
    let found = sniff(&magic[..got]);
    if let Some(declared) = expect.compression {
        if declared != found {
            return Err(LayerError::Compression { declared, found });
        }
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let mut stream: Box<dyn Read> = match found {
        Compression::None => Box::new(head.chain(&mut raw)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(
            CHUNK,
            head.chain(&mut raw),
        ))),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(head.chain(&mut raw)).map_err(LayerError::Read)?)
        }
    };
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        buf.resize(CHUNK, 0);
        let n = match read_full(&mut stream, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let shown = io::Error::new(e.kind(), e.to_string());
                let _ = tx.send(Err(e));
                drop(stream);
                return Err(tampered(raw, expect).unwrap_or(LayerError::Read(shown)));
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            return Ok(None);
        }
    }
    drop(stream);
    drop(tx);
    let (digest, size) = raw.finish().map_err(LayerError::Read)?;
    if let Some(expected) = expect.size {
        if size != expected {
            return Err(LayerError::Size { expected, actual: size });
        }
    }
    if let Some(expected) = &expect.digest {
        if *expected != digest {
            return Err(LayerError::Digest {
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    Ok(Some((digest, size)))
}

/// After a decompression error: when the rest of the blob hashes to something other than
/// the expected digest, the blob was altered, and that is the error to report (a corrupt
/// gzip stream is only the symptom).
fn tampered<R: Read>(raw: HashingReader<R>, expect: &LayerExpect) -> Option<LayerError> {
    let expected = expect.digest.as_ref()?;
    let (actual, _) = raw.finish().ok()?;
    (actual != *expected).then(|| LayerError::Digest {
        expected: expected.clone(),
        actual,
    })
}

fn sniff(magic: &[u8]) -> Compression {
    match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Reads until `buf` is full or the stream ends; returns the count.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The consumer's end: a `Read` over the chunks, handing each back once used.
struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.cur, next);
                    let _ = self.spare.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with_file(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, body).unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn expect_for(blob: &[u8], tar: &[u8], c: Compression) -> LayerExpect {
        LayerExpect {
            digest: Some(Digest::of(blob)),
            size: Some(blob.len() as u64),
            compression: Some(c),
            diff_id: Digest::of(tar),
        }
    }

    fn run(blob: Vec<u8>, expect: &LayerExpect) -> (tempfile::TempDir, Result<LayerOutcome, LayerError>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = UnpackOptions { privileged: false };
        let r = apply(Box::new(io::Cursor::new(blob)), expect, dir.path(), opts);
        (dir, r)
    }

    #[test]
    fn gzip_and_zstd_layers_unpack_and_verify() {
        let tar = tar_with_file("hello.txt", &vec![b'x'; 3 * CHUNK + 17]);
        for (blob, c) in [
            (gzip(&tar), Compression::Gzip),
            (zstd::encode_all(&tar[..], 3).unwrap(), Compression::Zstd),
            (tar.clone(), Compression::None),
        ] {
            let (dir, r) = run(blob.clone(), &expect_for(&blob, &tar, c));
            let out = r.unwrap();
            assert_eq!((out.digest, out.diff_size), (Digest::of(&blob), tar.len() as u64));
            assert_eq!(
                std::fs::metadata(dir.path().join("hello.txt")).unwrap().len(),
                3 * CHUNK as u64 + 17
            );
        }
    }

    #[test]
    fn wrong_digest_size_diff_id_and_compression_are_refused() {
        let tar = tar_with_file("a", b"abc");
        let blob = gzip(&tar);
        let good = expect_for(&blob, &tar, Compression::Gzip);
        let mut e = good.clone();
        e.digest = Some(Digest::of(b"other"));
        assert!(matches!(run(blob.clone(), &e).1, Err(LayerError::Digest { .. })));
        let mut e = good.clone();
        e.size = Some(blob.len() as u64 + 1);
        assert!(matches!(run(blob.clone(), &e).1, Err(LayerError::Size { .. })));
        let mut e = good.clone();
        e.size = Some(blob.len() as u64 - 1);
        assert!(matches!(run(blob.clone(), &e).1, Err(LayerError::Read(_))));
        let mut e = good.clone();
        e.diff_id = Digest::of(b"other");
        assert!(matches!(run(blob.clone(), &e).1, Err(LayerError::DiffId { .. })));
        let mut e = good;
        e.compression = Some(Compression::Zstd);
        assert!(matches!(run(blob, &e).1, Err(LayerError::Compression { .. })));
    }

    #[test]
    fn corrupt_gzip_is_a_read_error() {
        let tar = tar_with_file("a", &vec![7u8; 100_000]);
        let mut blob = gzip(&tar);
        let crc = blob.len() - 8; // the gzip trailer's CRC32
        blob[crc] ^= 0xff;
        let mut e = expect_for(&blob, &tar, Compression::Gzip);
        e.digest = None;
        let (_dir, r) = run(blob, &e);
        assert!(matches!(r, Err(LayerError::Read(_))), "{r:?}");
    }
}
