//! Inputs for property tests of the fuzz bodies, on stable and without a
//! fuzzing engine: random byte strings and mutations (bit flips, cuts,
//! splices, inserted bytes) of valid seeds. Deterministic: the same call
//! gives the same cases, so a failure reproduces.

/// xorshift64*: small, fast, and good enough to spread inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// `n` inputs: a third random, the rest mutated from `seeds`.
pub fn cases(seeds: &[&[u8]], n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            if seeds.is_empty() || i % 3 == 0 {
                let len = rng.below(512);
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                mutate(seeds[rng.below(seeds.len())], &mut rng)
            }
        })
        .collect()
}

/// One to four edits of `seed`.
pub fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.truncate(i);
            }
            2 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next_u64() as u8);
            }
            3 if !out.is_empty() => {
                // An interesting byte: a boundary value.
                let i = rng.below(out.len());
                out[i] = [0x00, 0x7f, 0x80, 0xff, b'\n', b'=', b'#'][rng.below(7)];
            }
            _ if out.len() > 1 => {
                // Splice: a copy of one part over another.
                let a = rng.below(out.len());
                let b = rng.below(out.len());
                let len = rng.below(out.len() - a.max(b)).min(64);
                let chunk: Vec<u8> = out[a..a + len].to_vec();
                out[b..b + len].copy_from_slice(&chunk);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_deterministic_and_varied() {
        let a = cases(&[b"hello world"], 100, 7);
        assert_eq!(a, cases(&[b"hello world"], 100, 7));
        assert_ne!(a, cases(&[b"hello world"], 100, 8));
        let distinct: std::collections::BTreeSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 80);
    }
}
