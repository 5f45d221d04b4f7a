//! Soft evidence: observations that are distributions over a discrete variable's categories
//! instead of one value (virtual evidence). A soft observation `s_v(k)` weighs every completion:
//! the likelihood of a sample is `Σ_x p(x) Π_v s_v(x_v)`. The circuit is decomposable, so this
//! factorizes into its leaves: a leaf `n` of variable `v` evaluates `L_n = Σ_k s_v(k) p_n(k)`
//! (linear in the number of categories), and its expected statistics split its flow `F_n` over the
//! categories in proportion to `s_v(k) p_n(k)`.
//!
//! Two forms share these rules:
//! - [`Soft::Dense`]: one probability per sample, variable and category (a soft CSV, the library).
//! - [`Soft::Softened`]: *data softening* (Liu & Van den Broeck, "Tractable Regularization of
//!   Probabilistic Circuits", NeurIPS 2021, §3): each observed value `x` is kept with probability
//!   β and the rest is spread evenly over the other `K − 1` categories, `s(k) = c + (β − c)[k = x]`
//!   with `c = (1 − β)/(K − 1)`. In closed form, with a normalized leaf, `L_n = c + (β − c) p_n(x)`
//!   and the statistics are the missing-value credit of `F_n c / L_n` plus the observed credit of
//!   `F_n (β − c) p_n(x) / L_n` at `x` — no per-category work in the forward pass.
//!
//! Continuous variables take no soft evidence (a dense form for them is an error; softening leaves
//! them hard). MPE, conditionals and sampling take hard evidence only.

use crate::RuntimeError;
use crate::data::Evidence;
use crate::dist::Dist;
use crate::plan::{Domain, Plan};

/// Soft observations of a batch (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub enum Soft {
    /// Every observed discrete value softened with keep-probability `beta` in `(0, 1]`
    /// (`1` is hard evidence).
    Softened { beta: f32 },
    /// Per sample, per variable, a probability per category: sample `s`, variable `v`, category
    /// `k` at `probs[s * row + offsets[v] + k]` with `row = offsets[num_vars]`. Every variable is
    /// discrete; a missing value is all ones.
    Dense { offsets: Vec<usize>, probs: Vec<f32> },
}

impl Soft {
    /// Softening with keep-probability `beta`, which must be in `(0, 1]`; the paper's values are
    /// close to one (0.9999 … 0.99 for binary data).
    pub fn softened(beta: f32) -> Result<Soft, RuntimeError> {
        if !(beta > 0.0 && beta <= 1.0) {
            return Err(RuntimeError::InvalidHyperParameter(format!("softening keep-probability β must be in (0, 1], got {beta}")));
        }
        Ok(Soft::Softened { beta })
    }

    /// Dense soft evidence for a plan's variables, every one discrete: `probs` is
    /// `[num_samples][Σ_v K_v]` (per variable its `K_v` category probabilities in order).
    pub fn dense(domains: &[Domain], probs: Vec<f32>) -> Result<Soft, RuntimeError> {
        let offsets = Soft::offsets(domains)?;
        let row = offsets[domains.len()];
        if row == 0 || !probs.len().is_multiple_of(row) {
            return Err(RuntimeError::RaggedData { len: probs.len(), num_vars: row });
        }
        Ok(Soft::Dense { offsets, probs })
    }

    /// Dense soft evidence from hard values (a one-hot per observed value, all ones where missing):
    /// what the forward pass sees is then exactly the hard evidence.
    pub fn one_hot(plan: &Plan, values: &[f32], missing: Option<&[bool]>) -> Result<Soft, RuntimeError> {
        let nv = plan.num_vars as usize;
        let offsets = Soft::offsets(&plan.domains)?;
        let row = offsets[nv];
        let n = values.len() / nv.max(1);
        let mut probs = vec![0f32; n * row];
        for s in 0..n {
            for v in 0..nv {
                let cats = &mut probs[s * row + offsets[v]..s * row + offsets[v + 1]];
                if missing.is_some_and(|m| m[s * nv + v]) {
                    cats.fill(1.0);
                } else if let Some(c) = cats.get_mut(values[s * nv + v] as usize) {
                    *c = 1.0;
                }
            }
        }
        Ok(Soft::Dense { offsets, probs })
    }

    /// Dense soft evidence of `batch` samples in the GPU kernels' layout, category-major
    /// (`[Σ_v K_v][batch]`, as the values are `[var][batch]`); `None` for other forms.
    pub fn dense_columns(&self, batch: usize) -> Option<Vec<f32>> {
        let Soft::Dense { offsets, probs } = self else { return None };
        let row = *offsets.last().unwrap_or(&0);
        let mut cols = vec![0f32; row * batch];
        for (b, sample) in probs.chunks_exact(row.max(1)).enumerate().take(batch) {
            for (j, &q) in sample.iter().enumerate() {
                cols[j * batch + b] = q;
            }
        }
        Some(cols)
    }

    /// Where each variable's categories start in a dense row (and, last, the row's width); every
    /// variable must be discrete.
    pub fn offsets(domains: &[Domain]) -> Result<Vec<usize>, RuntimeError> {
        let mut offsets = vec![0usize];
        for (var, d) in domains.iter().enumerate() {
            match *d {
                Domain::Discrete { num_cats } => offsets.push(offsets[var] + num_cats as usize),
                Domain::Continuous => return Err(RuntimeError::SoftOnContinuous { var }),
            }
        }
        Ok(offsets)
    }

    /// The row width of the dense form (probabilities per sample).
    fn row(offsets: &[usize]) -> usize {
        *offsets.last().unwrap_or(&0)
    }

    /// The samples `rows` of this soft evidence (the softened form has no per-sample data).
    pub(crate) fn select(&self, rows: impl Iterator<Item = usize>) -> Soft {
        match self {
            Soft::Softened { beta } => Soft::Softened { beta: *beta },
            Soft::Dense { offsets, probs } => {
                let row = Soft::row(offsets);
                Soft::Dense { offsets: offsets.clone(), probs: rows.flat_map(|r| probs[r * row..][..row].iter().copied()).collect() }
            }
        }
    }

    /// Check against a plan and a batch of `num_samples`: domains, shape, every probability in
    /// `[0, 1]` and every variable with some positive probability.
    pub(crate) fn validate(&self, plan: &Plan, num_samples: usize) -> Result<(), RuntimeError> {
        let (offsets, probs) = match self {
            Soft::Softened { beta } => return Soft::softened(*beta).map(|_| ()),
            Soft::Dense { offsets, probs } => (offsets, probs),
        };
        if *offsets != Soft::offsets(&plan.domains)? {
            return Err(RuntimeError::SoftShape { detail: "its categories per variable differ from the model's domains".into() });
        }
        let row = Soft::row(offsets);
        if probs.len() != row * num_samples {
            return Err(RuntimeError::SoftShape { detail: format!("{} probabilities for {num_samples} samples of {row} categories", probs.len()) });
        }
        for s in 0..num_samples {
            for v in 0..plan.num_vars as usize {
                let cats = &probs[s * row + offsets[v]..s * row + offsets[v + 1]];
                if let Some(&p) = cats.iter().find(|p| !(**p >= 0.0 && **p <= 1.0)) {
                    return Err(RuntimeError::SoftValue { sample: s, var: v, value: p });
                }
                if cats.iter().all(|&p| p == 0.0) {
                    return Err(RuntimeError::SoftAllZero { sample: s, var: v });
                }
            }
        }
        Ok(())
    }

    /// The soft observation of sample `s`, variable `var` of a discrete variable with `num_cats`
    /// categories whose hard value is `x`.
    #[inline]
    fn view(&self, s: usize, var: usize, x: f32, num_cats: u32) -> View<'_> {
        match self {
            Soft::Softened { beta } => {
                if num_cats < 2 || *beta == 1.0 {
                    return View::Hard(x);
                }
                let c = (1.0 - beta) / (num_cats - 1) as f32;
                View::Softened { x, keep: *beta, rest: c }
            }
            Soft::Dense { offsets, probs } => {
                let row = Soft::row(offsets);
                View::Dense(&probs[s * row + offsets[var]..s * row + offsets[var + 1]])
            }
        }
    }
}

/// One soft observation.
enum View<'a> {
    Hard(f32),
    Softened { x: f32, keep: f32, rest: f32 },
    Dense(&'a [f32]),
}

/// One (sample, variable) of a batch as a leaf sees it.
pub(crate) struct Observation<'a> {
    soft: Option<&'a Soft>,
    sample: usize,
    var: usize,
    x: f32,
    missing: bool,
}

impl<'a> Observation<'a> {
    #[inline]
    pub fn of(ev: &'a Evidence, sample: usize, var: usize) -> Self {
        Observation { soft: ev.soft.as_ref(), sample, var, x: ev.value(sample, var), missing: ev.is_missing(sample, var) }
    }
}

/// How one leaf sees one (sample, variable): its log-likelihood and how its flow becomes
/// statistics. `missing` and hard values are the usual rules; soft ones follow the module doc.
pub(crate) struct LeafInput<'a> {
    pub dist: Dist,
    /// The leaf's table constants.
    pub tab: &'a [f32],
    pub local: u32,
}

impl LeafInput<'_> {
    fn num_cats(&self) -> Option<u32> {
        match self.dist.domain() {
            Domain::Discrete { num_cats } => Some(num_cats),
            Domain::Continuous => None,
        }
    }

    /// `log L_n` for sample `s`: hard, missing (`log 1`) or soft.
    #[inline]
    pub fn log_lik(&self, o: &Observation) -> f32 {
        let (soft, s, var, x) = (o.soft, o.sample, o.var, o.x);
        if o.missing {
            return 0.0;
        }
        let d = self.dist;
        match (soft, self.num_cats()) {
            (Some(soft), Some(k)) => match soft.view(s, var, x, k) {
                View::Hard(x) => d.log_prob_table(self.tab, self.local, x),
                View::Softened { x, keep, rest } => (rest + (keep - rest) * d.log_prob_table(self.tab, self.local, x).exp()).ln(),
                View::Dense(q) => log_dot(q, |k| d.log_prob_table(self.tab, self.local, k as f32)),
            },
            _ => d.log_prob_table(self.tab, self.local, x),
        }
    }

    /// Credit flow `f` of sample `s` to the leaf's statistics: what the observation credits
    /// directly is added to `stats`; the flow it owes the leaf's missing-value expectation (all
    /// of it for a missing value, the `rest` share under data softening) is returned, for the
    /// caller to credit once per leaf with the batch's sum (`Dist::add_missing` is linear in the
    /// flow): `K` adds per categorical leaf and batch instead of `K` per sample.
    #[inline]
    #[must_use = "the owed flow is credited by the caller"]
    pub fn add_stats(&self, stats: &mut [f64], o: &Observation, f: f64) -> f64 {
        let (d, soft, s, var, x) = (self.dist, o.soft, o.sample, o.var, o.x);
        if o.missing {
            return f;
        }
        match (soft, self.num_cats()) {
            (Some(soft), Some(k)) => match soft.view(s, var, x, k) {
                View::Hard(x) => d.add_observed(stats, x, f),
                View::Softened { x, keep, rest } => {
                    let px = d.log_prob_table(self.tab, self.local, x).exp() as f64;
                    let l = rest as f64 + (keep - rest) as f64 * px;
                    if l > 0.0 {
                        d.add_observed(stats, x, f * (keep - rest) as f64 * px / l);
                        return f * rest as f64 / l;
                    }
                }
                View::Dense(q) => {
                    // Two passes over the categories (no per-sample buffers): the total, then the shares.
                    let w = |k: usize| q[k] as f64 * (d.log_prob_table(self.tab, self.local, k as f32) as f64).exp();
                    let l: f64 = (0..q.len()).map(w).sum();
                    if l > 0.0 {
                        for k in 0..q.len() {
                            let wk = w(k);
                            if wk > 0.0 {
                                d.add_observed(stats, k as f32, f * wk / l);
                            }
                        }
                    }
                }
            },
            _ => d.add_observed(stats, x, f),
        }
        0.0
    }
}

/// `log Σ_k q_k exp(lp(k))`, shifted by the largest term so that small leaves do not underflow.
fn log_dot(q: &[f32], lp: impl Fn(usize) -> f32) -> f32 {
    let term = |k: usize| if q[k] > 0.0 { q[k].ln() + lp(k) } else { f32::NEG_INFINITY };
    let m = (0..q.len()).map(term).fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + (0..q.len()).map(|k| (term(k) - m).exp()).sum::<f32>().ln()
}

/// Evidence from a soft CSV for variables of `domains` (every one discrete): one row per sample,
/// per variable either one column — `P(x = 1)` of a binary variable — or one column per category
/// (its probabilities, in order) for a variable with more than two; an empty field or `?` in a
/// binary variable's column, or in every column of a categorical one, leaves it unobserved.
pub fn evidence_from_soft_csv(text: &str, domains: &[Domain]) -> Result<Evidence, RuntimeError> {
    let widths: Vec<usize> = domains
        .iter()
        .enumerate()
        .map(|(var, d)| match *d {
            Domain::Discrete { num_cats: 2 } => Ok(1),
            Domain::Discrete { num_cats } => Ok(num_cats as usize),
            Domain::Continuous => Err(RuntimeError::SoftOnContinuous { var }),
        })
        .collect::<Result<_, _>>()?;
    let columns: usize = widths.iter().sum();
    let mut probs = Vec::new();
    let mut n = 0;
    for (line, row) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(RuntimeError::SoftShape { detail: format!("line {}: {} fields, the model's variables need {columns}", line + 1, fields.len()) });
        }
        let mut at = 0;
        for &w in &widths {
            let cells = &fields[at..at + w];
            at += w;
            let unobserved = cells.iter().all(|c| c.is_empty() || *c == "?");
            let parse = |c: &str| c.parse::<f32>().map_err(|_| RuntimeError::SoftShape { detail: format!("line {}: `{c}` is not a probability", line + 1) });
            match (unobserved, w) {
                (true, 1) => probs.extend([1.0, 1.0]),
                (true, _) => probs.extend(std::iter::repeat_n(1.0, w)),
                (false, 1) => {
                    let p = parse(cells[0])?;
                    probs.extend([1.0 - p, p]);
                }
                (false, _) => {
                    for c in cells {
                        probs.push(parse(c)?);
                    }
                }
            }
        }
        n += 1;
    }
    let soft = Soft::dense(domains, probs)?;
    Ok(Evidence::new(domains.len(), vec![0.0; n * domains.len()])?.with_soft(soft))
}
