//! Delay distributions, computed instead of loaded from netem's table files.
//!
//! netem draws a delay as `latency + jitter * t`, where `t` comes from an
//! inverse-CDF table scaled by `NETEM_DIST_SCALE` (8192) and stored as `i16`
//! (so `|t| <= 32767 / 8192`, just under 4). iproute2 generates the tables:
//!
//! - no distribution (netem's default): `t` uniform in `[-1, 1)`;
//! - `normal`: the standard normal quantile;
//! - `pareto` (`netem/pareto.c`): shape `a = 3`, scale 1, shifted by its mean
//!   1.5 and scaled by 4/3: `t = ((1 - u)^(-1/3) - 1.5) * 4/3`. So `t >= -2/3`
//!   and the tail is heavy on the late side;
//! - `paretonormal` (`netem/paretonormal.c`): a quarter normal and three
//!   quarters Pareto, combined quantile by quantile: `t = (n(u) + 3 p(u)) / 4`.
//!
//! Here the same quantile functions are evaluated directly on a uniform `u`
//! (with the same ±4 clamp), which is what the tables approximate.
//!
//! Correlation is done differently from netem on purpose: netem blends the
//! uniform `u` with the previous one, which narrows the distribution (the
//! blend of two uniforms is not uniform). Here the correlation is an AR(1)
//! process on a standard normal `z` (`z' = rho z + sqrt(1 - rho^2) e`), mapped
//! through the normal CDF to `u` (a Gaussian copula): consecutive delays are
//! correlated and the marginal distribution stays exactly the configured one.

use serde::{Deserialize, Serialize};

/// netem's tables hold `t * 8192` as `i16`: `|t|` stops at 32767 / 8192.
pub(crate) const TABLE_LIMIT: f64 = 32767.0 / 8192.0;

/// The shape of the delay's variation around `latency`, in units of `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Uniform in `latency ± jitter` (netem's default).
    #[default]
    Uniform,
    /// Normal with mean `latency` and standard deviation `jitter`, clamped to
    /// ±4 `jitter`.
    Normal,
    /// netem's Pareto (shape 3): from `latency - 2/3 jitter` up, heavy tail to
    /// `latency + 4 jitter`; mean about `latency`, median about `latency - 0.32 jitter`.
    Pareto,
    /// netem's paretonormal: ¼ normal + ¾ Pareto, quantile by quantile.
    #[serde(alias = "pareto-normal")]
    ParetoNormal,
}

impl Distribution {
    /// The quantile of `u` in `(0, 1)`, in units of `jitter` around `latency`.
    pub fn quantile(self, u: f64) -> f64 {
        match self {
            Distribution::Uniform => 2.0 * u - 1.0,
            Distribution::Normal => normal_quantile(u).clamp(-TABLE_LIMIT, TABLE_LIMIT),
            Distribution::Pareto => pareto_quantile(u),
            Distribution::ParetoNormal => ((normal_quantile(u) + 3.0 * pareto_quantile(u)) / 4.0)
                .clamp(-TABLE_LIMIT, TABLE_LIMIT),
        }
    }
}

/// netem's shifted and scaled Pareto (shape 3), clamped like its table.
fn pareto_quantile(u: f64) -> f64 {
    (((1.0 - u).powf(-1.0 / 3.0) - 1.5) * (4.0 / 3.0)).min(TABLE_LIMIT)
}

/// The standard normal quantile (inverse CDF), P. J. Acklam's rational
/// approximation (relative error below 1.2e-9). `p` in `(0, 1)`.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;

    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p <= 0.0 {
        f64::NEG_INFINITY
    } else if p >= 1.0 {
        f64::INFINITY
    } else if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

/// The standard normal CDF, through `erfc`.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function, Chebyshev fit (fractional error below
/// 1.2e-7 everywhere), as in Numerical Recipes' `erfcc`.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_known_values() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.01, -2.326_347_874),
            (0.999, 3.090_232_306),
            (0.1, -1.281_551_566),
        ] {
            assert!((normal_quantile(p) - z).abs() < 1e-6, "p={p}");
        }
    }

    #[test]
    fn normal_cdf_inverts_the_quantile() {
        for i in 1..100 {
            let p = f64::from(i) / 100.0;
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-6, "p={p}");
        }
    }

    #[test]
    fn pareto_matches_netem_table_ends() {
        // iproute2 pareto.c: the first entry (u = 0) is (1 - 1.5) * 4/3 * 8192.
        assert!((Distribution::Pareto.quantile(1e-12) + 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(Distribution::Pareto.quantile(1.0 - 1e-12), TABLE_LIMIT);
        // monotone
        let mut last = f64::NEG_INFINITY;
        for i in 1..1000 {
            let t = Distribution::ParetoNormal.quantile(f64::from(i) / 1000.0);
            assert!(t >= last);
            last = t;
        }
    }
}
