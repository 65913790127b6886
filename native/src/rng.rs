//! Where the engines' random bytes come from.  Never a Python callable: the engines run with
//! the GIL released, so a deterministic source for tests and vectors is plain data too.

use std::collections::VecDeque;

use aws_lc_rs::{digest, rand};

/// The random source could not deliver (scripted draws exhausted or of the wrong size, or
/// the operating system's generator failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngError(pub &'static str);

pub enum RandomSource {
    /// The operating system's CSPRNG (aws-lc).  The only source for production.
    Os,
    /// `SHA-512(seed | u64(counter))[..n]` per draw (n <= 64): reproducible runs for
    /// differential tests and benchmarks (bench/bench_core.py's `_rng` is the same function).
    Seeded { seed: Vec<u8>, counter: u64 },
    /// Recorded draws replayed in order, each of exactly the size asked for (test vectors).
    Scripted(VecDeque<Vec<u8>>),
}

impl RandomSource {
    pub fn fill(&mut self, out: &mut [u8]) -> Result<(), RngError> {
        match self {
            RandomSource::Os => rand::fill(out).map_err(|_| RngError("system random failed")),
            RandomSource::Seeded { seed, counter } => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(seed);
                ctx.update(&counter.to_be_bytes());
                *counter = counter.wrapping_add(1);
                let d = ctx.finish();
                let src = d
                    .as_ref()
                    .get(..out.len())
                    .ok_or(RngError("seeded draw over 64 bytes"))?;
                out.copy_from_slice(src);
                Ok(())
            }
            RandomSource::Scripted(draws) => match draws.pop_front() {
                Some(d) if d.len() == out.len() => {
                    out.copy_from_slice(&d);
                    Ok(())
                }
                Some(_) => Err(RngError("scripted draw of another size")),
                None => Err(RngError("scripted draws exhausted")),
            },
        }
    }
}
