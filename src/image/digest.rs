//! Content digests (`sha256:<64 hex>`) and a reader that hashes and counts what passes
//! through it.
//!
//! Every byte petri takes from an image (manifest, config, layer) is checked against a
//! digest the caller already trusts; hashing while the bytes stream past means a layer is
//! read exactly once, whatever else is done with it.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest. Other algorithms are refused at parse time, so every
/// `Digest` value can be used as a file name without further checks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {value:?}: {reason}")]
pub struct DigestError {
    pub value: String,
    pub reason: &'static str,
}

impl Digest {
    /// The sha256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest { hex: hex::encode(raw) }
    }

    /// The 64 lowercase hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as `docker images` shows them.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)); ChainID(0) = DiffID(0).
    pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
        for diff_id in diff_ids {
            let next = match out.last() {
                None => diff_id.clone(),
                Some(prev) => Digest::of(format!("{prev} {diff_id}").as_bytes()),
            };
            out.push(next);
        }
        out
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DigestError {
            value: s.to_string(),
            reason,
        };
        let (alg, hex) = s.split_once(':').ok_or_else(|| err("missing algorithm"))?;
        if alg != "sha256" {
            return Err(err("only sha256 is supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err("expected 64 lowercase hex characters"));
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Wraps a reader; hashes and counts every byte read. With a `limit`, reading more than
/// `limit` bytes fails, so a source that lies about a blob's size cannot stream forever.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: Option<u64>,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, limit: Option<u64>) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Reads what is left to the end, then returns the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_sha256(self.hasher.finalize().into()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(limit) = self.limit {
            if self.count > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stream is longer than its declared size of {limit} bytes"),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
    }

    #[test]
    fn parse_rejects_bad_forms() {
        for bad in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../etc/passwd",
            "sha256:e3b0",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
        assert_eq!(EMPTY.parse::<Digest>().unwrap().to_string(), EMPTY);
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = Digest::chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn hashing_reader_enforces_limit() {
        let mut r = HashingReader::new(&b"0123456789"[..], Some(4));
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("declared size of 4"));
    }

    proptest! {
        #[test]
        fn hashing_reader_matches_one_shot(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (d, n) = HashingReader::new(&data[..], None).finish().unwrap();
            prop_assert_eq!(d, Digest::of(&data));
            prop_assert_eq!(n, data.len() as u64);
        }

        #[test]
        fn display_parse_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Digest::of(&data);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }
}
