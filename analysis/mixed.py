"""Linear mixed-effects models of ratings: condition as fixed effect, crossed random intercepts. Django-free.

Model, fitted separately for every rating scale (sync, visual, overall)::

    rating = β₀ + β_condition + u_participant + u_clip + ε,
    u_participant ~ N(0, σ²_participant), u_clip ~ N(0, σ²_clip), ε ~ N(0, σ²_residual)

i.e. ``rating ~ condition + (1|participant) + (1|clip)`` in lme4 notation. Participants and clips are
crossed (a participant rates many clips, a clip is rated by many participants), so statsmodels has to be
given the single-group variance-component formulation (statistics.md §3.2): every row in one group and
each crossed factor as a variance component, ``vc_formula={"participant": "0 + C(participant)", "clip":
"0 + C(clip)"}`` with ``re_formula=None`` (no group-level intercept). The fixed effects are the
participant- and clip-corrected condition differences; the estimated marginal means (EMMs) are the
model's condition MOS.

Two engines, selected with ``engine=``:

* ``"fast"`` (default): an exact REML/ML fit of this specific model that never builds an n × q design.
  With q = n_participants + n_clips random effects, every quantity the likelihood needs is a q × q, q × p
  or p × p cross-product (Z'Z, Z'X, X'X, Z'y, X'y, y'y), accumulated once in O(n). The variance
  parameters are the ratios γ_k = σ²_k/σ²_residual (statsmodels' unscaled variance components); for
  each γ, β and σ² are profiled out and the deviance needs log|ΛZ'ZΛ + I| and solves with that matrix,
  Λ = diag(√γ) (Bates et al. 2015, lme4's penalised least squares, eqs. 18–41). A factor's own block
  of Z'Z is diagonal, so the largest factor (the clips) is eliminated first and only the Schur
  complement of the others (q_k × q_k, e.g. 300 participants) is Cholesky-factorised. γ ≥ 0 is
  optimised with scipy's L-BFGS-B using the exact gradient. The fixed-effect covariance is statsmodels'
  own (the inverse observed information of its profiled log-likelihood in (β, γ)), computed analytically
  once at the optimum, so both engines report the same standard errors. Cost: O(q_k³ + q_k²·q_e) per
  likelihood evaluation plus one O(q³) pass at the end, memory O(q²) (q = 900 → 6.5 MB): meant for q up
  to a few thousand levels.
* ``"statsmodels"``: the plain ``statsmodels.formula.api.mixedlm`` call above. It is the reference the
  fast engine is tested against (same log-likelihood, estimates and standard errors at the same
  parameters to 1e-8, and the same fit to statsmodels' optimiser precision, see
  tests/analysis/test_mixed.py), but it is slow on big studies (statsmodels #2452, #9097): with one
  group its variance-component design is dense. benchmarks/bench_analysis_models.py measured, for one
  scale of a 300-participant × 600-clip study, 202 s for statsmodels vs 0.3 s for the fast engine at
  8,880 ratings (equal estimates to 1e-7), with statsmodels' time growing as ~n^1.7; the full scale
  (33,300 ratings) takes the fast engine ~1–2 s. Hence the fast engine is the default at every size.

Inference: Wald z statistics and normal-quantile intervals for fixed effects, EMMs and contrasts (what
statsmodels' ``t_test`` does for MixedLM). No Satterthwaite/Kenward–Roger degrees of freedom exist in
statsmodels; with few participants or few clips per condition the z intervals are somewhat too narrow.
All pairwise condition contrasts are reported with Holm-adjusted p-values; their intervals are
per-comparison (unadjusted) 95 % intervals.

Convergence: each fit carries ``converged`` and the text of every warning raised or detected (optimiser
failure, variance component on the boundary, non-positive-definite information matrix). They are
reported, never silenced. statsmodels warns "The MLE may be on the boundary of the parameter space" when
any variance component is below 0.01 in absolute terms; the fast engine flags a component as on the
boundary when γ_k = σ²_k/σ²_residual < 1e-8, which is scale-free.

Why an ordinal model would be preferable, and what syncmos does instead (statistics.md §3.3). Ratings
on a 5-point ACR scale are ordered categories, not interval measurements: the distance between "Poor"
and "Fair" need not equal the one between "Good" and "Excellent", the scale is bounded (ceiling effects
for the hidden reference, floor effects for strong impairments shrink the variance near 1 and 5), and a
Gaussian model can predict means outside [1, 5]. A cumulative-link mixed model (CLMM, e.g. R's
``ordinal::clmm`` with ``rating ~ condition + (1|participant) + (1|clip)``) models the latent quality
behind the categories with estimated thresholds and is the gold standard. Python has no frequentist
CLMM: statsmodels' ``OrderedModel`` and ``mord`` have no random effects, and ``bambi``'s
``family="cumulative"`` is a Bayesian MCMC fit outside the required packages. syncmos therefore fits the
Gaussian LMM above as its primary model, which is the convention of the MOS literature and keeps the
results on the MOS scale; a CLMM check is to be run outside syncmos (R ``ordinal::clmm`` on the tidy
long frame) when conclusions hinge on small differences near the ends of the scale.

Faithful: the model, the REML/ML criteria (equal to statsmodels' log-likelihood to ~1e-9), statsmodels'
fixed-effect covariance, Holm's procedure (equal to statsmodels ``multipletests(method="holm")``).
UNVERIFIED choices: the z (not t) intervals, the boundary threshold of the fast engine, the unadjusted
contrast intervals.

References
----------
.. [1] D. Bates, M. Mächler, B. Bolker, S. Walker (2015), Fitting linear mixed-effects models using
   lme4, J. Stat. Softw. 67(1), §3 (penalised least squares, profiled REML deviance).
.. [2] statsmodels ``MixedLM`` (regression/mixed_linear_model.py) and the notebook
   ``examples/notebooks/variance_components.ipynb`` (crossed effects via one group).
.. [3] S. Holm (1979), A simple sequentially rejective multiple test procedure, Scand. J. Stat. 6, 65–70.
.. [4] R. H. B. Christensen, ordinal: Regression models for ordinal data (R package, ``clmm``).
"""

from __future__ import annotations

import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
from scipy import optimize, stats

ENGINES = ("fast", "statsmodels")
FIXED_EFFECT_COLUMNS = ["term", "estimate", "se", "z", "p_value", "ci_low", "ci_high"]
VARIANCE_COLUMNS = ["component", "variance", "sd", "proportion"]
EMM_COLUMNS = ["emm", "se", "ci_low", "ci_high", "n"]
CONTRAST_COLUMNS = ["estimate", "se", "z", "p_value", "p_holm", "ci_low", "ci_high"]
FIT_COLUMNS = ["engine", "method", "converged", "n_obs", "log_likelihood", "n_iterations", "warnings"]

# A variance ratio γ_k = σ²_k/σ²_residual below this is reported as on the boundary.
BOUNDARY_GAMMA = 1e-8
# An "ABNORMAL" L-BFGS-B stop (its line search cannot improve a deviance already optimal to rounding)
# still counts as converged when the relative projected gradient |∂D/∂γ_k|·max(γ_k, 0.01)/|D| is below
# this: at 33,300 ratings a gradient of 0.01 means a deviance improvement of ~4e-9 left on the table.
RELATIVE_GRADIENT_TOLERANCE = 1e-6
# The fast engine's matrices are small (q_k × q_k after elimination); OpenBLAS thread hand-offs cost
# more than they save there: on a busy 2-core machine one deviance at 300 participants × 600 clips took
# 0.84 s with default threads and 0.028 s with one.
FAST_ENGINE_BLAS_THREADS = 1


@dataclass(frozen=True)
class MixedModelResult:
    """One fitted model (one scale).

    Attributes
    ----------
    engine, method : str
        ``"fast"`` or ``"statsmodels"``; ``"REML"`` or ``"ML"``.
    fixed_effects : pandas.DataFrame
        ``term, estimate, se, z, p_value, ci_low, ci_high``; treatment coding against the reference
        condition (``Intercept`` is its mean, ``condition[T.x]`` the difference x − reference).
    variance_components : pandas.DataFrame
        ``component, variance, sd, proportion`` for every random factor and ``residual``;
        proportion = share of the total variance.
    emms : pandas.DataFrame
        Estimated marginal mean per condition: ``<condition column>, emm, se, ci_low, ci_high, n``.
    contrasts : pandas.DataFrame
        Every pair: ``condition_a, condition_b, estimate`` (a − b), ``se, z, p_value, p_holm, ci_low,
        ci_high``.
    converged : bool
        The optimiser reported success (statsmodels' ``converged``; for the fast engine L-BFGS-B's
        success, or a stop with a negligible relative gradient, or a successful Powell retry).
    warnings : tuple of str
        Every warning text, in order (empty when none): statsmodels' own warnings as
        ``"<Category>: <message>"``, or the fast engine's optimiser, boundary and information-matrix
        findings.
    n_obs : int
    n_iterations : int or None
        Optimiser iterations (fast engine); None for statsmodels, which does not report them.
    log_likelihood : float
        REML or ML log-likelihood (statsmodels' ``llf`` convention, constants included).
    fe_cov : numpy.ndarray
        Covariance matrix of the fixed effects (p × p), same order as ``fixed_effects``.
    """

    engine: str
    method: str
    fixed_effects: pd.DataFrame
    variance_components: pd.DataFrame
    emms: pd.DataFrame
    contrasts: pd.DataFrame
    converged: bool
    warnings: tuple[str, ...]
    n_obs: int
    n_iterations: int | None
    log_likelihood: float
    fe_cov: np.ndarray = field(repr=False)

    def fit_row(self) -> dict:
        """The fit statistics as one dict with the ``FIT_COLUMNS`` keys (warnings joined by " | ")."""
        return {
            "engine": self.engine, "method": self.method, "converged": self.converged, "n_obs": self.n_obs,
            "log_likelihood": self.log_likelihood, "n_iterations": self.n_iterations,
            "warnings": " | ".join(self.warnings),
        }


@dataclass(frozen=True)
class MixedModelTables:
    """Per-scale fits stacked into tidy tables, each with the scale column first.

    ``fits`` has one row per scale (``FIT_COLUMNS``); ``results`` maps scale → :class:`MixedModelResult`.
    """

    fixed_effects: pd.DataFrame
    variance_components: pd.DataFrame
    emms: pd.DataFrame
    contrasts: pd.DataFrame
    fits: pd.DataFrame
    results: dict


@dataclass(frozen=True)
class _Design:
    y: np.ndarray                      # (n,)
    X: np.ndarray                      # (n, p): intercept + treatment dummies
    condition_codes: np.ndarray        # (n,) index into levels
    levels: list                       # condition levels, reference first
    terms: list[str]                   # p names
    counts: np.ndarray                 # ratings per level
    random_names: tuple[str, ...]
    random_codes: tuple[np.ndarray, ...]   # each (n,) int codes 0..k-1
    random_sizes: tuple[int, ...]


@dataclass(frozen=True)
class _EngineFit:
    beta: np.ndarray
    fe_cov: np.ndarray
    variances: dict                    # random name → σ², plus "residual"
    log_likelihood: float
    converged: bool
    warnings: tuple[str, ...]
    n_iterations: int | None


def fit_mixed_model(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    condition: str = "condition",
    participant: str = "participant",
    clip: str = "clip",
    extra_random: Sequence[str] = (),
    reference_condition=None,
    engine: str = "fast",
    reml: bool = True,
    confidence: float = 0.95,
    max_iterations: int = 500,
) -> MixedModelResult:
    """Fit ``dv ~ condition + (1|participant) + (1|clip)`` to one scale's ratings.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating of a single scale (filter first, or use
        :func:`fit_mixed_model_by_scale`). Rows with a missing value in any model column are dropped.
    dv, condition, participant, clip : str
        Column names (defaults follow ``analysis.data.RATING_COLUMNS``).
    extra_random : sequence of str
        Further crossed random intercepts, e.g. ``("content",)`` for source content when several
        conditions share contents (statistics.md §3.1).
    reference_condition : optional
        Baseline level of the treatment coding (e.g. the hidden reference); default: the first level
        (categorical order, else sorted).
    engine : {"fast", "statsmodels"}
        See the module docstring; both fit the same model.
    reml : bool
        REML (default, as statsmodels) or ML.
    confidence : float
        Level of every interval, in (0, 1).
    max_iterations : int
        Optimiser iteration cap (fast engine); hitting it makes ``converged`` False.

    Returns
    -------
    MixedModelResult

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> rows = [(p, c, "AB"[c % 2], 3 + (c % 2) + rng.normal(0, .5)) for p in range(8) for c in range(10)]
    >>> df = pd.DataFrame(rows, columns=["participant", "clip", "condition", "rating"])
    >>> fit = fit_mixed_model(df)
    >>> list(fit.emms["condition"]), fit.converged
    (['A', 'B'], True)
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    random = (participant, clip, *extra_random)
    design = _build_design(data, dv, condition, random, reference_condition)
    if engine == "fast":
        engine_fit = _fit_fast(design, reml=reml, max_iterations=max_iterations)
    else:
        engine_fit = _fit_statsmodels(design, reml=reml)
    return _summarise(design, engine_fit, condition=condition, engine=engine, reml=reml, confidence=confidence)


def fit_mixed_model_by_scale(data: pd.DataFrame, *, scale: str = "scale", **kwargs) -> MixedModelTables:
    """:func:`fit_mixed_model` once per value of ``scale``, stacked into tidy tables.

    Keyword arguments go to :func:`fit_mixed_model`. Scales are fitted in sorted order.
    """
    if scale not in data.columns:
        raise KeyError(f"columns not in data: {[scale]}")
    results = {}
    for value, part in data.groupby(scale, sort=True, observed=True):
        results[value] = fit_mixed_model(part, **kwargs)

    def stack(attribute):
        frames = []
        for value, result in results.items():
            frame = getattr(result, attribute).copy()
            frame.insert(0, scale, value)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[scale])

    fits = pd.DataFrame([{scale: value, **result.fit_row()} for value, result in results.items()],
                        columns=[scale, *FIT_COLUMNS])
    return MixedModelTables(
        fixed_effects=stack("fixed_effects"), variance_components=stack("variance_components"),
        emms=stack("emms"), contrasts=stack("contrasts"), fits=fits, results=results,
    )


def holm_adjust(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)) for the ascending p_(1) ≤ … ≤ p_(m); equal to
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` (which is slow: it runs
    ``gc.collect()`` on every call). NaN p-values are left NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out


# --------------------------------------------------------------------------------------------------
# Design


def _build_design(data, dv, condition, random, reference_condition) -> _Design:
    columns = [dv, condition, *random]
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")
    if len(set(random)) != len(random):
        raise ValueError(f"random factors must be distinct, got {random}")
    frame = data[columns].copy()
    frame[dv] = pd.to_numeric(frame[dv], errors="raise").astype(float)
    frame = frame.dropna()
    if frame.empty:
        raise ValueError("no complete rows to fit")

    if isinstance(frame[condition].dtype, pd.CategoricalDtype):
        levels = [level for level in frame[condition].cat.categories if (frame[condition] == level).any()]
    else:
        levels = sorted(frame[condition].unique())
    if reference_condition is not None:
        if reference_condition not in levels:
            raise ValueError(f"reference_condition {reference_condition!r} not among the conditions {levels}")
        levels = [reference_condition] + [level for level in levels if level != reference_condition]
    codes = pd.Categorical(frame[condition], categories=levels).codes
    n, p = len(frame), len(levels)
    X = np.zeros((n, p))
    X[:, 0] = 1.0
    dummies = codes > 0
    X[np.flatnonzero(dummies), codes[dummies]] = 1.0
    terms = ["Intercept"] + [f"{condition}[T.{level}]" for level in levels[1:]]

    random_codes, random_sizes = [], []
    for name in random:
        level_codes, uniques = pd.factorize(frame[name], sort=True)
        random_codes.append(level_codes.astype(np.int64))
        random_sizes.append(len(uniques))
    return _Design(
        y=frame[dv].to_numpy(dtype=float), X=X, condition_codes=codes.astype(np.int64), levels=list(levels),
        terms=terms,
        counts=np.bincount(codes, minlength=p), random_names=tuple(random),
        random_codes=tuple(random_codes), random_sizes=tuple(random_sizes),
    )


# --------------------------------------------------------------------------------------------------
# Fast engine


class _CrossedLMM:
    """Profiled (RE)ML criterion of y = Xβ + Σ_k Z_k u_k + ε from cross-products only.

    Parameters are the variance ratios γ_k = σ²_k/σ²_residual ≥ 0 (statsmodels' unscaled ``vcomp``).
    With Λ = diag(√γ_k repeated over factor k's levels), V = I + ZΛΛZ' and A = ΛZ'ZΛ + I (Bates et al.
    2015): log|V| = log|A|, V⁻¹ = I − ZΛA⁻¹ΛZ', so with y_q = ΛZ'y and X_q = ΛZ'X
    X'V⁻¹X = M = X'X − X_q'A⁻¹X_q, X'V⁻¹y = X'y − X_q'A⁻¹y_q, β̂ = M⁻¹X'V⁻¹y,
    r² = y'V⁻¹y − β̂'X'V⁻¹y (the penalised RSS), σ̂² = r²/fac, fac = n − p (REML) or n, and
    −2ℓ = log|A| [+ log|M| for REML] + fac·(1 + log(2π r²/fac)).
    Each factor's own block of Z'Z is diagonal (one level per row), so the largest factor e is
    eliminated first: A = [[A_kk, A_ke], [A_ek, diag(a_e)]], S = A_kk − A_ke diag(a_e)⁻¹ A_ek, and every
    solve costs O(q_k³ + q_k²·q_e) instead of O(q³) (q_k = 300 instead of q = 900 for 300 participants
    × 600 clips).
    """

    def __init__(self, design: _Design, reml: bool):
        n, p = design.X.shape
        blocks = [
            sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, size))
            for codes, size in zip(design.random_codes, design.random_sizes)
        ]
        Z = sp.hstack(blocks, format="csr")
        self.ZtZ = (Z.T @ Z).toarray()                 # (q, q)
        self.ZtX = np.asarray(Z.T @ design.X)          # (q, p)
        self.Zty = np.asarray(Z.T @ design.y)          # (q,)
        self.XtX = design.X.T @ design.X               # (p, p)
        self.Xty = design.X.T @ design.y               # (p,)
        self.yty = float(design.y @ design.y)
        self.n, self.p = n, p
        self.sizes = design.random_sizes
        self.block = np.repeat(np.arange(len(self.sizes)), self.sizes)  # factor of each of the q columns
        edges = np.concatenate([[0], np.cumsum(self.sizes)])
        self.slices = [slice(edges[j], edges[j + 1]) for j in range(len(self.sizes))]
        self.eliminated = int(np.argmax(self.sizes))
        self.idx_e = np.arange(edges[self.eliminated], edges[self.eliminated + 1])
        self.idx_k = np.setdiff1d(np.arange(edges[-1]), self.idx_e)
        self.ZtZ_kk = self.ZtZ[np.ix_(self.idx_k, self.idx_k)]          # (q_k, q_k)
        self.ZtZ_ke = self.ZtZ[np.ix_(self.idx_k, self.idx_e)]          # (q_k, q_e)
        self.n_e = np.diag(self.ZtZ)[self.idx_e]                         # (q_e,)
        self.reml = reml
        self.fac = n - p if reml else n

    def _factor(self, gamma):
        gamma = np.maximum(np.asarray(gamma, dtype=float), 0.0)
        lam = np.sqrt(gamma)[self.block]                                  # (q,)
        lam_k, lam_e = lam[self.idx_k], lam[self.idx_e]
        a_e = lam_e**2 * self.n_e + 1.0                                   # diagonal of A_ee
        A_ke = lam_k[:, None] * self.ZtZ_ke * lam_e[None, :]              # (q_k, q_e)
        K = A_ke / a_e[None, :]
        S = lam_k[:, None] * self.ZtZ_kk * lam_k[None, :] - K @ A_ke.T
        S[np.diag_indices_from(S)] += 1.0
        L_S = np.linalg.cholesky(S)                                        # (q_k, q_k) lower
        rhs = np.column_stack([lam * self.Zty, lam[:, None] * self.ZtX])   # [y_q, X_q]  (q, 1 + p)
        f = dict(gamma=gamma, lam=lam, a_e=a_e, A_ke=A_ke, K=K, L_S=L_S)
        solved, v = self._solve(f, rhs, with_half=True)                   # A⁻¹[y_q, X_q]
        quad = rhs[self.idx_e].T @ (rhs[self.idx_e] / a_e[:, None]) + v.T @ v   # [y_q, X_q]'A⁻¹[y_q, X_q]
        M = self.XtX - quad[1:, 1:]                                        # X'V⁻¹X  (p, p)
        XtViy = self.Xty - quad[1:, 0]
        R_X = np.linalg.cholesky(M)
        beta = sla.cho_solve((R_X, True), XtViy)
        r2 = max(self.yty - quad[0, 0] - beta @ XtViy, 1e-300)
        logdet_A = np.log(a_e).sum() + 2.0 * np.log(np.diag(L_S)).sum()
        f.update(solved=solved, M=M, R_X=R_X, beta=beta, r2=r2, logdet_A=logdet_A)
        return f

    def _solve(self, f, rhs, with_half=False):
        """A⁻¹·rhs by block elimination; with_half also returns v = L_S⁻¹(rhs_k − K rhs_e), for which
        rhs'A⁻¹rhs = rhs_e' diag(a_e)⁻¹ rhs_e + v'v."""
        v = sla.solve_triangular(f["L_S"], rhs[self.idx_k] - f["K"] @ rhs[self.idx_e], lower=True)
        out = np.empty_like(rhs)
        out[self.idx_k] = sla.solve_triangular(f["L_S"].T, v, lower=False)
        out[self.idx_e] = (rhs[self.idx_e] - f["A_ke"].T @ out[self.idx_k]) / f["a_e"].reshape(
            (-1,) + (1,) * (rhs.ndim - 1))
        return (out, v) if with_half else out

    def _deviance(self, f) -> float:
        logdet = f["logdet_A"]
        if self.reml:
            logdet += 2.0 * np.log(np.diag(f["R_X"])).sum()
        return float(logdet + self.fac * (1.0 + np.log(2.0 * np.pi * f["r2"] / self.fac)))

    def deviance(self, gamma) -> float:
        """−2 × profiled log-likelihood (REML or ML), constants included (statsmodels' ``−2·llf``)."""
        try:
            return self._deviance(self._factor(gamma))
        except np.linalg.LinAlgError:
            return np.inf

    def deviance_and_gradient(self, gamma):
        """Deviance and its exact gradient in γ (at β̂, σ̂²; envelope theorem):
        ∂ℓ/∂γ_j = −½tr(V⁻¹D_j) + ½tr(M⁻¹W_j'W_j) [REML] + (fac/2)·|u_j|²/r², D_j = Z_jZ_j',
        W = Z'V⁻¹X, u = Z'V⁻¹r, and tr(V⁻¹D_j) = (q_j − tr((A⁻¹)_jj))/γ_j (matrix determinant lemma,
        log|V| = log|Γ| + log|Γ⁻¹ + Z'Z|; γ_j is floored at 1e-12 there).
        """
        try:
            f = self._factor(gamma)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros(len(self.sizes))
        lam, solved, beta = f["lam"], f["solved"], f["beta"]
        y_s, X_s = solved[:, 0], solved[:, 1:]                             # A⁻¹y_q, A⁻¹X_q
        W = self.ZtX - self.ZtZ @ (lam[:, None] * X_s)                     # Z'V⁻¹X  (q, p)
        u = (self.Zty - self.ZtX @ beta) - self.ZtZ @ (lam * (y_s - X_s @ beta))   # Z'V⁻¹r  (q,)
        diag_inv = np.empty(len(lam))                                      # diag of A⁻¹
        L_inv = sla.solve_triangular(f["L_S"], np.eye(len(self.idx_k)), lower=True)
        diag_inv[self.idx_k] = np.einsum("ij,ij->j", L_inv, L_inv)
        LK = L_inv @ f["K"]
        diag_inv[self.idx_e] = 1.0 / f["a_e"] + np.einsum("ij,ij->j", LK, LK)
        M_inv = sla.cho_solve((f["R_X"], True), np.eye(self.p)) if self.reml else None
        grad = np.zeros(len(self.sizes))
        for j, part in enumerate(self.slices):
            if f["gamma"][j] > 1e-10:
                trace_ViD = (part.stop - part.start - diag_inv[part].sum()) / f["gamma"][j]
            else:  # on the boundary the ratio is 0/0: tr(Z_j'V⁻¹Z_j) = tr(Z_j'Z_j) − tr(P'A⁻¹P), P = ΛZ'Z_j
                P = lam[:, None] * self.ZtZ[:, part]
                trace_ViD = np.trace(self.ZtZ[part, part]) - np.sum(P * self._solve(f, P))
            score = -0.5 * trace_ViD + 0.5 * self.fac * (u[part] @ u[part]) / f["r2"]
            if self.reml:
                score += 0.5 * np.sum(M_inv * (W[part].T @ W[part]))
            grad[j] = -2.0 * score
        return self._deviance(f), grad

    def estimates(self, gamma):
        """β̂, σ̂²_residual and statsmodels' fixed-effect covariance at γ, plus whether the information
        matrix was usable (negative definite)."""
        f = self._factor(gamma)
        fe_cov, usable = self._statsmodels_fe_cov(f["lam"], f["M"], f["beta"])
        return f["beta"], f["r2"] / self.fac, fe_cov, usable

    def _statsmodels_fe_cov(self, lam, M, beta):
        """Fixed-effect block of inv(−H), H the Hessian of statsmodels' profiled log-likelihood
        ℓ(β, γ) = −½log|V| − ½log|X'V⁻¹X| (REML only) − (fac/2)·log(r'V⁻¹r), r = y − Xβ, in the form of
        statsmodels' ``MixedLM.hessian``: H_ββ = −fac·M/Q, H_βγ_k = −fac·W_k'u_k/Q, and H_γγ from
        tr(V⁻¹D_jV⁻¹D_k) = |G_jk|²_F, r'V⁻¹D_jV⁻¹D_kV⁻¹r = u_j'G_jk u_k and, for REML, the log|M| terms;
        D_k = Z_kZ_k', Q = r'V⁻¹r, G = Z'V⁻¹Z = Z'Z − B'B with B = L⁻¹ΛZ'Z (LL' = A), W = Z'V⁻¹X,
        u = Z'V⁻¹r (block j: rows of factor j). One dense O(q³) pass, done once per fit.
        """
        A = lam[:, None] * self.ZtZ * lam[None, :]
        A[np.diag_indices_from(A)] += 1.0
        L = np.linalg.cholesky(A)
        B = sla.solve_triangular(L, lam[:, None] * self.ZtZ, lower=True)   # (q, q)
        W = self.ZtX - B.T @ sla.solve_triangular(L, lam[:, None] * self.ZtX, lower=True)
        Ztr = self.Zty - self.ZtX @ beta
        c_r = sla.solve_triangular(L, lam * Ztr, lower=True)
        u = Ztr - B.T @ c_r
        Q = self.yty - 2.0 * beta @ self.Xty + beta @ self.XtX @ beta - c_r @ c_r   # r'V⁻¹r
        G = self.ZtZ - B.T @ B
        k, fac, p, sl = len(self.sizes), self.fac, self.p, self.slices
        H_bb = -fac * M / Q
        H_bg = np.column_stack([-fac * (W[sl[j]].T @ u[sl[j]]) / Q for j in range(k)])
        b_vec = np.array([u[sl[j]] @ u[sl[j]] for j in range(k)])
        M_inv = np.linalg.inv(M) if self.reml else None
        WtW = [W[sl[j]].T @ W[sl[j]] for j in range(k)]
        H_gg = np.zeros((k, k))
        for j in range(k):
            for m in range(j + 1):
                G_jm = G[sl[j], sl[m]]
                value = 0.5 * np.sum(G_jm * G_jm)
                value -= 0.5 * fac * (2.0 * (u[sl[j]] @ G_jm @ u[sl[m]]) / Q - b_vec[j] * b_vec[m] / Q**2)
                if self.reml:
                    F = W[sl[j]].T @ G_jm @ W[sl[m]]
                    value += 0.5 * (np.sum((M_inv @ WtW[j]) * (M_inv @ WtW[m]).T) - np.trace(M_inv @ (F + F.T)))
                H_gg[j, m] = H_gg[m, j] = value
        H = np.block([[H_bb, H_bg], [H_bg.T, H_gg]])
        try:
            fe_cov = np.linalg.inv(-H)[:p, :p]
            usable = bool(np.all(np.diag(H) < 0) and np.all(np.linalg.eigvalsh((fe_cov + fe_cov.T) / 2) > 0))
        except np.linalg.LinAlgError:
            usable = False
        if not usable:
            # lme4's vcov, σ̂²(X'V⁻¹X)⁻¹, needs no Hessian.
            fe_cov = (Q / fac) * np.linalg.inv(M)
        return fe_cov, usable


def _fit_fast(design: _Design, *, reml: bool, max_iterations: int) -> _EngineFit:
    with _blas_threads(FAST_ENGINE_BLAS_THREADS):
        return _fit_fast_inner(design, reml=reml, max_iterations=max_iterations)


def _blas_threads(limit: int):
    """Cap BLAS threads (threadpoolctl is optional: without it this is a no-op)."""
    global _THREADPOOL_CONTROLLER
    from contextlib import nullcontext

    if _THREADPOOL_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return nullcontext()
        _THREADPOOL_CONTROLLER = ThreadpoolController()  # scanning the loaded libraries takes ~4 ms
    return _THREADPOOL_CONTROLLER.limit(limits=limit, user_api="blas")


_THREADPOOL_CONTROLLER = None


def _fit_fast_inner(design: _Design, *, reml: bool, max_iterations: int) -> _EngineFit:
    model = _CrossedLMM(design, reml)
    k = len(design.random_sizes)
    bounds = [(0.0, None)] * k
    found = []
    result = optimize.minimize(
        model.deviance_and_gradient, np.ones(k), jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-8, "maxfun": 20 * max_iterations},
    )
    converged = bool(result.success) and bool(np.isfinite(result.fun))
    if not converged and result.nit > 1 and np.isfinite(result.fun):
        # L-BFGS-B also stops "ABNORMAL" when the line search cannot improve a deviance that is already
        # optimal to rounding; accept that when the projected gradient is negligible.
        _, gradient = model.deviance_and_gradient(result.x)
        projected = np.where(result.x > 0.0, gradient, np.minimum(gradient, 0.0))
        relative = np.abs(projected) * np.maximum(result.x, 1e-2) / max(abs(result.fun), 1.0)
        converged = bool(np.max(relative) < RELATIVE_GRADIENT_TOLERANCE)
    n_iterations = int(result.nit)
    if not converged:
        found.append(f"L-BFGS-B did not converge after {result.nit} iterations: {result.message}")
        if max_iterations > 1:
            retry = optimize.minimize(model.deviance, result.x, method="Powell", bounds=bounds,
                                      options={"maxiter": 20 * max_iterations, "xtol": 1e-10, "ftol": 1e-15})
            n_iterations += int(retry.nit)
            if retry.success and retry.fun <= result.fun + 1e-9:
                found.append("retried with Powell: converged")
                result, converged = retry, True
            else:
                found.append(f"retried with Powell: {retry.message}")
    gamma = np.maximum(np.asarray(result.x, dtype=float), 0.0)
    beta, sigma2, fe_cov, usable = model.estimates(gamma)
    for name, value in zip(design.random_names, gamma):
        if value < BOUNDARY_GAMMA:
            found.append(f"variance component '{name}' is on the boundary of the parameter space (estimated ≈ 0)")
    if not usable:
        found.append("The information matrix at the estimate is not negative definite; the fixed-effect "
                     "covariance falls back to sigma^2 (X'V^-1 X)^-1")
    variances = {name: sigma2 * g for name, g in zip(design.random_names, gamma)}
    variances["residual"] = sigma2
    return _EngineFit(beta=beta, fe_cov=fe_cov, variances=variances, log_likelihood=-0.5 * float(result.fun),
                      converged=converged, warnings=tuple(found), n_iterations=n_iterations)


# --------------------------------------------------------------------------------------------------
# statsmodels engine


def _fit_statsmodels(design: _Design, *, reml: bool) -> _EngineFit:
    import statsmodels.formula.api as smf

    # Internal column names keep user names out of patsy (a user column "C" or "Q" would break it).
    frame = pd.DataFrame({"y_": design.y, "group_": 0})
    frame["condition_"] = design.condition_codes  # code 0 = reference = patsy's default Treatment baseline
    vc_formula = {}
    for index, (name, codes) in enumerate(zip(design.random_names, design.random_codes)):
        frame[f"re{index}_"] = codes
        vc_formula[f"re{index}_"] = f"0 + C(re{index}_)"
    formula = "y_ ~ C(condition_)" if len(design.levels) > 1 else "y_ ~ 1"
    with warnings_module.catch_warnings(record=True) as caught:
        warnings_module.simplefilter("always")
        model = smf.mixedlm(formula, frame, groups="group_", vc_formula=vc_formula, re_formula=None)
        result = model.fit(reml=reml)
    texts = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    vc_names = list(model.exog_vc.names)  # statsmodels' order (sorted keys)
    variances = {design.random_names[int(name[2:-1])]: float(value) for name, value in zip(vc_names, result.vcomp)}
    variances = {name: variances[name] for name in design.random_names}
    variances["residual"] = float(result.scale)
    p = design.X.shape[1]
    fe_cov = np.asarray(result.cov_params())[:p, :p]
    n_iterations = None  # statsmodels #4508: MixedLM attaches no mle_retvals
    return _EngineFit(beta=np.asarray(result.fe_params, dtype=float), fe_cov=fe_cov, variances=variances,
                      log_likelihood=float(result.llf), converged=bool(result.converged), warnings=texts,
                      n_iterations=n_iterations)


# --------------------------------------------------------------------------------------------------
# Tables


def _summarise(design, fit: _EngineFit, *, condition, engine, reml, confidence) -> MixedModelResult:
    z_crit = stats.norm.ppf(0.5 + confidence / 2.0)
    se = np.sqrt(np.diag(fit.fe_cov))
    z = fit.beta / se
    fixed = pd.DataFrame({
        "term": design.terms, "estimate": fit.beta, "se": se, "z": z,
        "p_value": 2.0 * stats.norm.sf(np.abs(z)),
        "ci_low": fit.beta - z_crit * se, "ci_high": fit.beta + z_crit * se,
    }, columns=FIXED_EFFECT_COLUMNS)

    total = sum(fit.variances.values())
    variance = pd.DataFrame({
        "component": list(fit.variances), "variance": list(fit.variances.values()),
        "sd": np.sqrt(np.maximum(list(fit.variances.values()), 0.0)),
        "proportion": [v / total if total > 0 else np.nan for v in fit.variances.values()],
    }, columns=VARIANCE_COLUMNS)

    p = len(design.levels)
    L_emm = np.zeros((p, p))
    L_emm[:, 0] = 1.0
    L_emm[np.arange(1, p), np.arange(1, p)] = 1.0
    emm = L_emm @ fit.beta
    emm_se = np.sqrt(np.einsum("ij,jk,ik->i", L_emm, fit.fe_cov, L_emm))
    emms = pd.DataFrame({condition: design.levels, "emm": emm, "se": emm_se,
                         "ci_low": emm - z_crit * emm_se, "ci_high": emm + z_crit * emm_se,
                         "n": design.counts.astype(int)}, columns=[condition, *EMM_COLUMNS])

    pairs = list(combinations(range(p), 2))
    rows = []
    for a, b in pairs:
        weights = L_emm[a] - L_emm[b]
        estimate = float(weights @ fit.beta)
        contrast_se = float(np.sqrt(weights @ fit.fe_cov @ weights))
        rows.append((design.levels[a], design.levels[b], estimate, contrast_se))
    contrasts = pd.DataFrame(rows, columns=["condition_a", "condition_b", "estimate", "se"])
    if rows:
        contrasts["z"] = contrasts["estimate"] / contrasts["se"]
        contrasts["p_value"] = 2.0 * stats.norm.sf(np.abs(contrasts["z"]))
        contrasts["p_holm"] = holm_adjust(contrasts["p_value"].to_numpy())
        contrasts["ci_low"] = contrasts["estimate"] - z_crit * contrasts["se"]
        contrasts["ci_high"] = contrasts["estimate"] + z_crit * contrasts["se"]
    contrasts = contrasts.reindex(columns=["condition_a", "condition_b", *CONTRAST_COLUMNS])

    return MixedModelResult(
        engine=engine, method="REML" if reml else "ML", fixed_effects=fixed, variance_components=variance,
        emms=emms, contrasts=contrasts, converged=fit.converged, warnings=fit.warnings,
        n_obs=len(design.y), n_iterations=fit.n_iterations, log_likelihood=fit.log_likelihood,
        fe_cov=fit.fe_cov,
    )
