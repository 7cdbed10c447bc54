//! A correctly rounded `pow` for the RoPE frequencies.
//!
//! The reference builds its RoPE tables natively, where `f64::powf` is glibc's `pow`. A
//! `wasm32-unknown-unknown` guest gets Rust's bundled libm instead, whose `pow` is off by one
//! ulp for about one argument in ten (θ = 10000, exponents `2i/d`); an angle one ulp off
//! occasionally rounds to a different f32 sine. glibc's `pow` is correctly rounded on all but a
//! handful of those arguments (29 of the 32 896 exponents `2i/d` for even `d ≤ 512`, none for
//! `d` = 32, 64 or 128), so computing it correctly rounded here reproduces the native tables.
//!
//! The method: `exp(y · ln x)` in double-double arithmetic (about 100 bits), rounded once.

/// A double-double: `hi + lo` with `|lo| ≤ ulp(hi)/2`.
#[derive(Clone, Copy, Debug)]
struct Dd {
    hi: f64,
    lo: f64,
}

fn two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    let bb = s - a;
    Dd {
        hi: s,
        lo: (a - (s - bb)) + (b - bb),
    }
}

fn quick_two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    Dd {
        hi: s,
        lo: b - (s - a),
    }
}

/// Dekker's split: `a = hi + lo` with 26-bit halves (exact for |a| < 2^996).
fn split(a: f64) -> (f64, f64) {
    let t = 134_217_729.0 * a;
    let hi = t - (t - a);
    (hi, a - hi)
}

fn two_prod(a: f64, b: f64) -> Dd {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    Dd {
        hi: p,
        lo: ((ah * bh - p) + ah * bl + al * bh) + al * bl,
    }
}

impl Dd {
    fn from(x: f64) -> Self {
        Dd { hi: x, lo: 0.0 }
    }

    fn add(self, b: Dd) -> Dd {
        let s = two_sum(self.hi, b.hi);
        let t = two_sum(self.lo, b.lo);
        let s = quick_two_sum(s.hi, s.lo + t.hi);
        quick_two_sum(s.hi, s.lo + t.lo)
    }

    fn mul(self, b: Dd) -> Dd {
        let p = two_prod(self.hi, b.hi);
        quick_two_sum(p.hi, p.lo + (self.hi * b.lo + self.lo * b.hi))
    }

    fn mul_f(self, b: f64) -> Dd {
        let p = two_prod(self.hi, b);
        quick_two_sum(p.hi, p.lo + self.lo * b)
    }

    fn div_f(self, b: f64) -> Dd {
        let q1 = self.hi / b;
        let p = two_prod(q1, b);
        let r = ((self.hi - p.hi) - p.lo + self.lo) / b;
        quick_two_sum(q1, r)
    }

    fn scale(self, k: i32) -> Dd {
        let f = 2f64.powi(k);
        Dd {
            hi: self.hi * f,
            lo: self.lo * f,
        }
    }
}

const LN2: Dd = Dd {
    hi: std::f64::consts::LN_2,
    lo: 2.319_046_813_846_299_6e-17,
};

/// `e^a` in double-double, for |a| < 700.
fn exp_dd(a: Dd) -> Dd {
    let k = (a.hi / LN2.hi).round();
    // r = a − k·ln2, |r| ≤ ln2/2; then r / 2^10 so that a short Taylor series is exact to dd.
    let r = a.add(LN2.mul_f(-k)).scale(-10);
    let mut term = r;
    let mut sum = r;
    for n in 2..=12 {
        term = term.mul(r).div_f(n as f64);
        sum = sum.add(term);
    }
    // e^r − 1 = s; squaring (1 + s) ten times as s ← 2s + s² keeps the small part exact.
    for _ in 0..10 {
        sum = sum.mul_f(2.0).add(sum.mul(sum));
    }
    Dd::from(1.0).add(sum).scale(k as i32)
}

/// `ln x` in double-double, for finite x > 0: one Newton step from libm's `ln`.
fn ln_dd(x: f64) -> Dd {
    let y0 = x.ln();
    // y1 = y0 + x·e^(−y0) − 1
    let t = exp_dd(Dd::from(-y0)).mul_f(x).add(Dd::from(-1.0));
    Dd::from(y0).add(t)
}

/// `x^y`, correctly rounded (to about 2^-100 of a tie), for finite `x > 0` and `|y·ln x| < 700`;
/// otherwise libm's `powf`.
pub fn pow(x: f64, y: f64) -> f64 {
    if !(x > 0.0 && x.is_finite() && y.is_finite()) || y == 0.0 || x == 1.0 {
        return x.powf(y);
    }
    let l = ln_dd(x).mul_f(y);
    if l.hi.is_nan() || l.hi.abs() >= 700.0 {
        return x.powf(y);
    }
    let r = exp_dd(l);
    r.hi + r.lo
}

#[cfg(test)]
mod tests {
    use super::pow;

    #[test]
    fn exact_cases() {
        assert_eq!(pow(10000.0, 0.0), 1.0);
        assert_eq!(pow(10000.0, 0.5), 100.0);
        assert_eq!(pow(10000.0, 0.25), 10.0);
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(4.0, -0.5), 0.5);
        assert_eq!(pow(10000.0, 0.75), 1000.0);
    }

    /// Correctly rounded values from mpmath at 300 bits, for exponents `2i/d` where Rust's
    /// bundled (wasm) libm `pow` is one ulp off.
    #[test]
    fn rope_frequencies_are_correctly_rounded() {
        for (d, i, bits) in [
            (64u32, 3u32, 0x4002_f892_c703_4a03u64),
            (6, 1, 0x4035_8b5a_5186_8c61),
            (16, 1, 0x4009_4c58_3ada_5b53),
            (16, 5, 0x4073_c3a4_edfa_9759),
            (22, 9, 0x409d_4745_0a7f_916d),
        ] {
            let y = (2 * i) as f64 / d as f64;
            assert_eq!(pow(10000.0, y).to_bits(), bits, "10000^({}/{d})", 2 * i);
        }
    }
}
