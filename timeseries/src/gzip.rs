//! Gzip for write batches, reusing one deflate state and one output
//! buffer from batch to batch.
//!
//! `flate2`'s `GzEncoder` allocates a new deflate state (about 300 KiB:
//! window, hash chains, pending buffer) for every batch, and a fresh output
//! buffer; above glibc's mmap threshold each is new, zeroed pages, faulted
//! in again at every batch. A batcher writes thousands of batches an hour,
//! so it keeps one [`Gzip`] and resets it between them. The deflate state
//! writes the gzip wrapper itself (RFC 1952: header, deflate at level 1,
//! CRC-32 and length), computing the CRC over each piece of input just
//! after copying it into its window, while it is in cache, rather than
//! over the whole batch afterwards.

use flate2::{Compress, Compression, FlushCompress, Status};

/// A reusable gzip compressor (level 1).
#[derive(Debug)]
pub struct Gzip {
    deflate: Compress,
    out: Vec<u8>,
}

impl Default for Gzip {
    fn default() -> Self {
        Self::new()
    }
}

impl Gzip {
    /// A compressor at level 1, the fastest, with deflate's largest window.
    pub fn new() -> Self {
        Gzip {
            deflate: Compress::new_gzip(Compression::fast(), 15),
            out: Vec::new(),
        }
    }

    /// `data` as one gzip member, borrowed until the next call.
    ///
    /// # Errors
    /// The deflate state's own error, which writing to memory does not
    /// produce in practice; the caller keeps its data.
    pub fn compress(&mut self, data: &[u8]) -> Result<&[u8], flate2::CompressError> {
        self.deflate.reset();
        self.out.clear();
        // Line protocol compresses 5–8 times at level 1; start there.
        self.out.reserve(data.len() / 5 + 64);
        let mut input = data;
        loop {
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut self.out, FlushCompress::Finish)?;
            let consumed = (self.deflate.total_in() - before) as usize;
            input = &input[consumed..];
            if status == Status::StreamEnd {
                break;
            }
            // Out of room: grow and go on.
            self.out.reserve(self.out.capacity().max(4096));
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_and_reuses_its_state() {
        let mut gz = Gzip::new();
        let lines: Vec<u8> = (0..20_000)
            .flat_map(|i| {
                format!(
                    "river_gauge,device=g{} water_level_m={}.{} {}\n",
                    i % 97,
                    i % 13,
                    i % 7,
                    1_700_000_000_000i64 + i
                )
                .into_bytes()
            })
            .collect();
        for data in [&lines[..], b"", b"x", &lines[..1000], &lines[..]] {
            let packed = gz.compress(data).unwrap().to_vec();
            assert_eq!(&packed[..3], &[0x1f, 0x8b, 8]);
            assert_eq!(gunzip(&packed), data);
        }
    }

    #[test]
    fn incompressible_input_grows_the_buffer() {
        let mut gz = Gzip::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let packed = gz.compress(&noise).unwrap().to_vec();
        assert_eq!(gunzip(&packed), noise);
    }
}
