"""Multi-site cohort simulator on real HCP connectivity, with ground truth and an oracle.

Generative model for subject s of site k (N ROIs, K = 7 Yeo networks, L the `(N, K)` indicator):

1. Attributes: `sample_attributes` draws the 19 default attributes with realistic correlations
   (IQ subscales share a general factor; education follows age in children and IQ in adults;
   conditions come from correlated liabilities with sex-dependent prevalence; ADOS and the ADHD
   index follow the diagnoses; BMI follows age and diagnoses). Cohorts measure only some of them.
2. Site covariance C_k `(N, N)`: the real HCP group FCN (brainspace; *main* group for training
   cohorts, *holdout* for zero-shot ones), plus a scanner-specific smooth spatial edge bias, plus a
   network-specific shared signal u L L^T (each network's common fluctuation; it gives the network
   level room to vary, and brings within-network FC to the level of real individual HCP FCNs), plus
   white-noise variance; made positive definite by eigenvalue clipping. Its network-level matrix
   is Psi_k = (L^T C_k^-1 L)^-1 `(K, K)` (C_k + L D L^T is positive definite iff Psi_k + D is).
3. Network level: Psi_s = Psi_k + g_k J + sum_a code_a(value) E_a + D_s, where E_a `(K, K)` are
   literature-style effects on named Yeo-7 network blocks (`EFFECTS`; several attributes have none),
   g_k the site's global signal, and D_s subject variability (Wishart-like around Psi_k plus a
   subject global-signal term). Psi_s is clipped to positive definite (rare; counted).
4. Subject covariance M_s = C_k + L (Psi_s - Psi_k) L^T; Sigma_s ~ InverseWishart(nu, c M_s) with
   c = nu - N - 1 (edge-level subject idiosyncrasy, E Sigma_s = M_s); a T_k x N time series
   X ~ N(0, Sigma_s) is drawn and its Pearson correlation is the subject's FCN, so estimation noise
   behaves like real data.

The oracle (`oracle.py`) scores every attribute by its posterior under this exact model. Zero-shot
cohorts differ by more than the template: unseen scanners with stronger biases, other scan lengths,
noise, global signal, age ranges and prevalences.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from datasets_scripts.hcp import load_group_fcn
from datasets_scripts.oracle import Hypotheses, LaplaceFit, laplace_fit, posterior, vech, wishart_like_cov
from datasets_scripts.subjects import SubjectTable
from processing.atlases import Atlas, load_atlas
from processing.connectivity import compute_fcns


CONDITIONS = ("autism", "adhd", "depression", "schizophrenia", "bipolar", "anxiety", "ocd", "ptsd")
# Liability correlations (comorbidity), order of CONDITIONS.
_COMORBIDITY = {("autism", "adhd"): 0.35, ("autism", "anxiety"): 0.25, ("adhd", "anxiety"): 0.2,
                ("depression", "anxiety"): 0.5, ("depression", "bipolar"): 0.3, ("depression", "ptsd"): 0.35,
                ("anxiety", "ptsd"): 0.4, ("anxiety", "ocd"): 0.3, ("schizophrenia", "bipolar"): 0.4,
                ("depression", "ocd"): 0.2}
# Liability shift for males (autism and ADHD more frequent in males, depression/anxiety in females).
_MALE_SHIFT = {"autism": 0.35, "adhd": 0.25, "depression": -0.2, "anxiety": -0.2, "ptsd": -0.15}
ALWAYS_MEASURED = ("age", "sex")

@dataclass(frozen=True)
class SiteSpec:
    """One scanner/site.

    Attributes:
        name: unique site name.
        timepoints: scan length T (effective independent timepoints).
        noise_var: extra white-noise variance per ROI (lowers all correlations).
        global_signal: added to every network coupling (raises all correlations).
        bias_scale: amplitude of the scanner's smooth spatial edge bias (see `simulate.site_edge_bias`).
        eyes_closed: fraction of subjects scanned with eyes closed.
    """

    name: str
    timepoints: int
    noise_var: float
    global_signal: float
    bias_scale: float
    eyes_closed: float

@dataclass(frozen=True)
class CohortSpec:
    """One named cohort: its sites, template group, attribute distributions and what it measured."""

    name: str
    template: str  # "main" or "holdout" HCP group template
    zero_shot: bool
    weight: float  # share of the simulated subjects
    sites: tuple[SiteSpec, ...]
    age_range: tuple[float, float]
    male_fraction: float
    prevalence: dict[str, float]
    measured: tuple[str, ...]
    missing_rate: float = 0.03
    ados_controls_measured: float = 0.3
    extra: dict = field(default_factory=dict)

def _sites(prefix: str, specs: list[tuple]) -> tuple[SiteSpec, ...]:
    return tuple(SiteSpec(f"{prefix}-{i + 1}", *s) for i, s in enumerate(specs))

_ALL = ("age", "sex", "handedness", "education_years", "fiq", "viq", "piq", "bmi", "eye_status")
DEFAULT_COHORTS: tuple[CohortSpec, ...] = (
    CohortSpec("SimASD", "main", False, 0.22,
               _sites("ASD", [(240, 0.30, 0.02, 0.04, 0.2), (180, 0.40, 0.06, 0.05, 0.5), (300, 0.25, 0.00, 0.03, 0.8),
                              (200, 0.35, 0.04, 0.06, 0.2)]),
               (6, 40), 0.8, {"autism": 0.45, "adhd": 0.12, "anxiety": 0.12, "ocd": 0.04, "depression": 0.05},
               _ALL + ("ados_total", "autism", "adhd", "anxiety", "ocd")),
    CohortSpec("SimADHD", "main", False, 0.18,
               _sites("ADHD", [(170, 0.35, 0.05, 0.05, 0.2), (260, 0.30, 0.02, 0.04, 0.8), (220, 0.40, 0.03, 0.05, 0.3)]),
               (7, 22), 0.65, {"adhd": 0.45, "autism": 0.06, "anxiety": 0.12, "depression": 0.06},
               _ALL + ("adhd_index", "adhd", "autism", "anxiety")),
    CohortSpec("SimPsych", "main", False, 0.22,
               _sites("PSY", [(300, 0.30, 0.03, 0.04, 0.2), (400, 0.25, 0.02, 0.03, 0.2), (200, 0.40, 0.05, 0.06, 0.8),
                              (250, 0.35, 0.04, 0.05, 0.5)]),
               (18, 65), 0.5, {"depression": 0.3, "schizophrenia": 0.18, "bipolar": 0.15, "anxiety": 0.3, "ocd": 0.12,
                               "ptsd": 0.18, "adhd": 0.06},
               _ALL + ("depression", "schizophrenia", "bipolar", "anxiety", "ocd", "ptsd", "adhd")),
    CohortSpec("SimLifespan", "main", False, 0.13,
               _sites("LIFE", [(400, 0.25, 0.02, 0.03, 0.2), (300, 0.30, 0.04, 0.04, 0.5), (250, 0.30, 0.03, 0.05, 0.8)]),
               (8, 85), 0.48, {"depression": 0.12, "anxiety": 0.15, "adhd": 0.08, "ptsd": 0.08, "ocd": 0.04,
                               "autism": 0.03, "bipolar": 0.03, "schizophrenia": 0.02},
               _ALL + CONDITIONS + ("adhd_index",)),
    # Zero-shot cohorts: holdout template, unseen sites, stronger scanner biases, other T/noise/ages/prevalences.
    CohortSpec("SimASD-Z", "holdout", True, 0.09,
               _sites("ZASD", [(150, 0.45, 0.08, 0.10, 0.2), (500, 0.22, 0.01, 0.09, 0.8)]),
               (10, 50), 0.75, {"autism": 0.4, "adhd": 0.15, "anxiety": 0.2, "ocd": 0.06, "depression": 0.1},
               _ALL + ("ados_total", "autism", "adhd", "anxiety", "ocd", "depression")),
    CohortSpec("SimADHD-Z", "holdout", True, 0.07,
               _sites("ZADHD", [(140, 0.45, 0.07, 0.10, 0.2), (350, 0.28, 0.00, 0.09, 0.8)]),
               (8, 30), 0.6, {"adhd": 0.4, "autism": 0.08, "anxiety": 0.15, "depression": 0.08},
               _ALL + ("adhd_index", "adhd", "autism", "anxiety", "depression")),
    CohortSpec("SimPsych-Z", "holdout", True, 0.09,
               _sites("ZPSY", [(600, 0.20, 0.06, 0.10, 0.2), (160, 0.45, 0.02, 0.09, 0.6)]),
               (25, 80), 0.45, {"depression": 0.35, "schizophrenia": 0.2, "bipolar": 0.2, "anxiety": 0.25, "ocd": 0.15,
                                "ptsd": 0.25, "adhd": 0.08},
               _ALL + CONDITIONS),
)

def _liability_corr() -> np.ndarray:
    corr = np.eye(len(CONDITIONS))
    for (a, b), r in _COMORBIDITY.items():
        i, j = CONDITIONS.index(a), CONDITIONS.index(b)
        corr[i, j] = corr[j, i] = r
    return corr

def sample_attributes(cohort: CohortSpec, site: SiteSpec, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """True values of the 19 default attributes for `n` subjects of one site (no missing values).

    Returns a frame with float columns (continuous; binary as 0/1) and string columns (categorical).
    """
    lo, hi = cohort.age_range
    age = rng.uniform(lo, hi, n)
    male = rng.random(n) < cohort.male_fraction
    # Correlated condition liabilities, thresholded at the cohort's prevalence.
    liab = rng.multivariate_normal(np.zeros(len(CONDITIONS)), _liability_corr(), size=n)
    cond = {}
    for j, c in enumerate(CONDITIONS):
        prev = cohort.prevalence.get(c, 0.01)
        shift = _MALE_SHIFT.get(c, 0.0) * (male - cohort.male_fraction)
        cond[c] = (liab[:, j] + shift > norm.ppf(1 - prev)).astype(float)
    # IQ: general factor g; subscales correlate ~0.7 with each other, ~0.85 with g.
    g = rng.normal(size=n) - 0.5 * cond["schizophrenia"] - 0.2 * cond["adhd"]
    fiq = 100 + 15 * g + rng.normal(0, 4, n)
    viq = 100 + 15 * (0.85 * g + 0.53 * rng.normal(size=n)) - 3 * cond["autism"]
    piq = 100 + 15 * (0.85 * g + 0.53 * rng.normal(size=n))
    # Education: school grade in children, IQ-linked in adults.
    adult_edu = 13 + 2.5 * (0.5 * g + 0.87 * rng.normal(size=n)) - 1.0 * cond["schizophrenia"]
    education = np.clip(np.minimum(age - 5.5 + rng.normal(0, 0.5, n), adult_edu), 0, 26)
    # BMI: grows through childhood, slowly with adult age; higher with antipsychotic-treated diagnoses.
    bmi = np.where(age < 18, 15 + 0.45 * (age - 6), 23 + 0.06 * (age - 18)) + rng.normal(0, 3.0, n)
    bmi += 1.0 * cond["depression"] + 2.5 * cond["schizophrenia"] + 1.2 * cond["bipolar"]
    bmi = np.clip(bmi, 12, 55)
    # Symptom scores follow diagnoses.
    ados = np.where(cond["autism"] > 0, rng.normal(11.5, 3.5, n), rng.normal(2.5, 1.8, n))
    ados = np.clip(np.round(ados + 1.5 * cond["adhd"] * (cond["autism"] == 0)), 0, 28)
    adhd_index = np.where(cond["adhd"] > 0, rng.normal(68, 8, n), rng.normal(47, 7, n))
    adhd_index = np.clip(np.round(adhd_index + 4 * cond["autism"] + 3 * cond["anxiety"]), 30, 95)
    p_left = 0.09 + 0.06 * cond["autism"]
    u = rng.random(n)
    handed = np.where(u < p_left, "Left", np.where(u < p_left + 0.03, "Ambidextrous", "Right"))
    eyes = np.where(rng.random(n) < site.eyes_closed, "Closed", "Open")
    return pd.DataFrame({
        "age": np.round(age, 1), "sex": np.where(male, "Male", "Female"), "handedness": handed,
        "education_years": np.round(education), "fiq": np.round(np.clip(fiq, 45, 155)),
        "viq": np.round(np.clip(viq, 45, 155)), "piq": np.round(np.clip(piq, 45, 155)), "bmi": np.round(bmi, 1),
        "eye_status": eyes, "ados_total": ados, "adhd_index": adhd_index, **cond,
    })

def apply_missingness(true: pd.DataFrame, cohort: CohortSpec, rng: np.random.Generator) -> pd.DataFrame:
    """The observed table: attributes a cohort did not measure are missing; others miss at random.

    ADOS is mostly not administered to non-autistic participants (as in ABIDE).
    """
    observed = true.copy().astype(object)
    for col in true.columns:
        if col not in cohort.measured:
            observed[col] = None
            continue
        if col in ALWAYS_MEASURED:
            continue
        drop = rng.random(len(true)) < cohort.missing_rate
        if col == "ados_total" and "autism" in true:
            drop |= (true["autism"].to_numpy() == 0) & (rng.random(len(true)) > cohort.ados_controls_measured)
        observed.loc[drop, col] = None
    for col in true.columns:  # numeric columns back to float with NaN
        if true[col].dtype.kind in "fi":
            observed[col] = pd.to_numeric(observed[col], errors="coerce").astype(float)
    return observed


# --------------------------------------------------------------------------------------------------
# Effects on Yeo-7 network blocks
# --------------------------------------------------------------------------------------------------
YEO7 = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
_YEO17_TO_7 = {"TempPar": "Default"}


@dataclass(frozen=True)
class Effect:
    """How one attribute changes network couplings.

    code(value) = (value - center) / scale for continuous attributes, 1 for `level` (a binary 1 or a
    categorical class), else 0. The pattern P has ``weight * sqrt(Psi_aa Psi_bb)`` at each pair
    (network_a, network_b, weight) (within-network connectivity when a == b), Psi the main
    template's network-level matrix. The effect per unit code is E = P * separability / ||P||_Omega,
    with Omega the reference subject variability: one unit of code shifts a subject by
    `separability` standard deviations of subject variability (d'), so difficulty is set by this
    number and does not depend on the atlas.
    """

    pairs: tuple[tuple[str, str, float], ...]
    separability: float
    center: float = 0.0
    scale: float = 1.0
    level: str | float | None = None

    def code(self, values: pd.Series | np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if self.level is None:
            return (values.astype(float) - self.center) / self.scale
        if isinstance(self.level, str):
            return (values == self.level).astype(float)
        return (values.astype(float) == float(self.level)).astype(float)


# Literature-style effects (reviews of rs-fMRI case-control and lifespan studies): ageing lowers
# within-network and raises between-network coupling; autism shows DMN hypoconnectivity and
# sensory over-connectivity; ADHD a weaker DMN/task-positive segregation; depression DMN and
# DMN-limbic hyperconnectivity with fronto-parietal hypoconnectivity; schizophrenia widespread
# fronto-parietal/DMN dysconnectivity; bipolar limbic-DMN; anxiety and PTSD salience-limbic
# hyperconnectivity; eyes closed raises visual-somatomotor coupling. No effect: handedness,
# education, verbal/performance IQ, BMI, OCD (sanity checks; they may still be predictable
# through their correlations with attributes that have effects).
EFFECTS: dict[str, Effect] = {
    "age": Effect((("Default", "Default", -1.0), ("SalVentAttn", "SalVentAttn", -0.7),
                   ("Default", "DorsAttn", 0.7), ("SomMot", "SomMot", -0.5)), 0.9, center=40, scale=20),
    "sex": Effect((("SomMot", "SomMot", 1.0), ("Vis", "Vis", 0.7), ("Default", "Default", -0.7)), 1.3, level="Male"),
    "fiq": Effect((("Cont", "Cont", 1.0), ("Cont", "DorsAttn", 0.8)), 0.55, center=100, scale=15),
    "eye_status": Effect((("Vis", "Vis", 1.0), ("Vis", "SomMot", 0.8), ("Vis", "DorsAttn", -0.8)), 1.2, level="Closed"),
    "ados_total": Effect((("Default", "SalVentAttn", 1.0), ("Default", "Default", -0.6)), 0.5, center=6, scale=5),
    "adhd_index": Effect((("Default", "DorsAttn", 0.8), ("Cont", "Default", 0.8)), 0.5, center=50, scale=10),
    "autism": Effect((("Default", "Default", -1.0), ("Default", "Limbic", -0.7), ("SomMot", "Vis", 0.8)), 1.1, level=1),
    "adhd": Effect((("Default", "DorsAttn", 1.0), ("Cont", "Cont", -0.8), ("SalVentAttn", "Default", 0.6)), 1.05, level=1),
    "depression": Effect((("Default", "Default", 1.0), ("Default", "Limbic", 0.8), ("Cont", "Cont", -0.6),
                          ("Cont", "DorsAttn", -0.6)), 1.4, level=1),
    "schizophrenia": Effect((("Cont", "Cont", -1.0), ("Default", "Cont", -0.8), ("SomMot", "SomMot", -0.7),
                             ("Default", "Default", -0.5)), 1.6, level=1),
    "bipolar": Effect((("Limbic", "Default", 1.0), ("SalVentAttn", "Cont", -0.8), ("Limbic", "Limbic", 0.7)), 1.25, level=1),
    "anxiety": Effect((("SalVentAttn", "SalVentAttn", 1.0), ("SalVentAttn", "Limbic", 0.8)), 1.3, level=1),
    "ptsd": Effect((("SalVentAttn", "Limbic", 1.0), ("Default", "Default", -0.6), ("SalVentAttn", "Default", -0.6)),
                   1.3, level=1),
}


@dataclass(frozen=True)
class SimulationConfig:
    """Simulator settings.

    Attributes:
        subjects: total number of subjects over all cohorts.
        atlas: a Schaefer atlas name, e.g. ``"schaefer100-7"`` (HCP templates exist for 100-400 ROIs).
        seed: random seed (everything is reproducible from it).
        idiosyncrasy: kappa = nu - N - 1 of the inverse-Wishart edge-level subject variability.
        network_dof: degrees of freedom of the Wishart-like network-level subject variability.
        global_fraction: SD of a subject's global-signal shift of all couplings, as a fraction of
            the mean entry of the site's Psi.
        isotropic_fraction: isotropic network-level variability, as a fraction of the smallest
            eigenvalue of the site's Psi.
        clip_fraction: Psi_s is clipped to eigenvalues >= this fraction of Psi_k's smallest.
        network_signal: variance u of each Yeo network's shared signal, added as u L L^T to every
            site covariance (and to the reference for effect sizes). Without it the template's
            network-level matrix is nearly singular, so subject variability and effects live in
            tiny contrasts that only a model-whitened score sees: edge regression stayed near chance
            while the oracle reached 0.8-0.9 (calibration 2026-11; see `EFFECTS`).
        effect_scale: multiplies every effect strength (1.2 with the per-attribute separabilities
            gives zero-shot edge-regression AUCs of ~0.65-0.80 and oracle AUCs of ~0.78-0.92 at
            Schaefer-100 with 1,500 subjects).
        oracle_pool: attribute draws per site used by the oracle for p(h | site) and nuisance moments.
    """

    subjects: int = 1500
    atlas: str = "schaefer100-7"
    seed: int = 0
    idiosyncrasy: float = 150.0
    network_dof: float = 80.0
    global_fraction: float = 0.25
    isotropic_fraction: float = 0.1
    clip_fraction: float = 0.05
    network_signal: float = 0.3
    effect_scale: float = 1.2
    oracle_pool: int = 4000
    cohorts: tuple[CohortSpec, ...] = DEFAULT_COHORTS


# --------------------------------------------------------------------------------------------------
# Geometry and sites
# --------------------------------------------------------------------------------------------------
def yeo7_assignment(atlas: Atlas) -> np.ndarray:
    """`(N,)` index into `YEO7` for every ROI (17-network names map to their 7-network parent)."""
    out = []
    for name in (atlas.network_names[i] for i in atlas.network_assignment):
        name = _YEO17_TO_7.get(name, name)
        parent = [y for y in YEO7 if name.startswith(y)]
        if not parent:
            raise ValueError(f"Atlas {atlas.name!r}: network {name!r} has no Yeo-7 parent; the simulator needs a "
                             f"Schaefer atlas (networks {list(YEO7)}).")
        out.append(YEO7.index(parent[0]))
    return np.array(out)


def hcp_parcellation(atlas_name: str) -> str:
    """``"schaefer400-17"`` -> ``"schaefer_400"`` (brainspace's HCP matrices are per ROI count)."""
    key = atlas_name.lower()
    if not key.startswith("schaefer"):
        raise ValueError(f"The simulator needs a Schaefer atlas (HCP templates), got {atlas_name!r}.")
    return f"schaefer_{key[len('schaefer'):].split('-')[0]}"


def clip_pd(mat: np.ndarray, floor: float) -> tuple[np.ndarray, bool]:
    """Symmetric `(..., N, N)` with eigenvalues clipped at `floor`; also whether any were clipped."""
    evals, evecs = np.linalg.eigh((mat + np.swapaxes(mat, -1, -2)) / 2)
    clipped = bool((evals < floor).any())
    return (evecs * np.maximum(evals, floor)[..., None, :]) @ np.swapaxes(evecs, -1, -2), clipped


def site_edge_bias(coords: np.ndarray, scale: float, rng: np.random.Generator, patterns: int = 3,
                   width_mm: float = 45.0) -> np.ndarray:
    """A scanner's smooth spatial edge bias `(N, N)`: signed outer products of Gaussian bumps.

    Models coil/field inhomogeneity and motion-like artefacts that raise or lower the coupling of
    regions near random centres; `scale` is its amplitude (correlation units).
    """
    centres = coords[rng.choice(len(coords), patterns, replace=False)]
    bias = np.zeros((len(coords), len(coords)))
    for centre in centres:
        bump = np.exp(-((coords - centre) ** 2).sum(1) / (2 * width_mm ** 2))
        bias += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * np.outer(bump, bump)
    return scale * bias


@dataclass
class SiteModel:
    """One site's fixed parameters: covariance `(N, N)`, network-level Psi `(K, K)`, scan length."""

    cohort: CohortSpec
    spec: SiteSpec
    cov: np.ndarray
    psi: np.ndarray
    subject_cov: np.ndarray  # (q, q) prior covariance of vech(D_s)


def build_site(cohort: CohortSpec, spec: SiteSpec, template: np.ndarray, coords: np.ndarray, net: np.ndarray,
               config: SimulationConfig, rng: np.random.Generator) -> SiteModel:
    n = template.shape[0]
    cov, _ = clip_pd(template + site_edge_bias(coords, spec.bias_scale, rng), 0.02)
    ind = np.eye(len(YEO7))[net]
    cov = cov + config.network_signal * ind @ ind.T + spec.noise_var * np.eye(n)
    psi = np.linalg.inv(ind.T @ np.linalg.solve(cov, ind))
    psi = (psi + psi.T) / 2
    return SiteModel(cohort, spec, cov, psi, subject_variability(psi, config))


def subject_variability(psi: np.ndarray, config: SimulationConfig) -> np.ndarray:
    """Prior covariance `(q, q)` of vech(D_s): Wishart-like around Psi, a global-signal term, and an
    isotropic floor (a fraction of Psi's smallest eigenvalue) so no network contrast is noise-free."""
    q = len(vech(psi))
    floor = (config.isotropic_fraction * np.linalg.eigvalsh(psi)[0]) ** 2
    glob = (config.global_fraction * psi.mean()) ** 2
    return wishart_like_cov(psi, config.network_dof) + glob * np.ones((q, q)) + floor * np.eye(q)


def effect_matrices(psi_ref: np.ndarray, omega_ref: np.ndarray, effects: dict[str, Effect],
                    scale: float) -> dict[str, np.ndarray]:
    """`(K, K)` effect per unit code for each attribute with an effect (see `Effect`)."""
    out = {}
    d = np.sqrt(np.diag(psi_ref))
    for key, eff in effects.items():
        mat = np.zeros((len(YEO7), len(YEO7)))
        for a, b, w in eff.pairs:
            i, j = YEO7.index(a), YEO7.index(b)
            mat[i, j] = mat[j, i] = w * d[i] * d[j]
        v = vech(mat)
        out[key] = mat * scale * eff.separability / np.sqrt(v @ np.linalg.solve(omega_ref, v))
    return out


def network_shift(attrs: pd.DataFrame, effect_mats: dict[str, np.ndarray]) -> np.ndarray:
    """`(S, K, K)` sum of attribute effects for S subjects (true attribute values)."""
    shift = np.zeros((len(attrs), len(YEO7), len(YEO7)))
    for key, mat in effect_mats.items():
        shift += EFFECTS[key].code(attrs[key])[:, None, None] * mat
    return shift


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def sample_time_series(cov: np.ndarray, kappa: float, timepoints: int, rng: np.random.Generator) -> torch.Tensor:
    """X `(S, T, N)` with Sigma_s ~ InverseWishart(N + 1 + kappa, kappa cov_s) and rows ~ N(0, Sigma_s).

    With kappa cov = U U^T (Cholesky) and Bartlett's W = U^-T A A^T U^-1 ~ Wishart(nu, (kappa cov)^-1),
    Sigma = W^-1 = U A^-T A^-1 U^T, so X = Z A^-1 U^T with Z standard normal `(T, N)`.
    """
    s, n, _ = cov.shape
    nu = n + 1 + kappa
    upper = torch.linalg.cholesky(torch.as_tensor(kappa * cov, dtype=torch.float64))
    bart = np.tril(rng.normal(size=(s, n, n)), -1)
    bart[:, np.arange(n), np.arange(n)] = np.sqrt(rng.chisquare(nu - np.arange(n), size=(s, n)))
    z = torch.as_tensor(rng.normal(size=(s, timepoints, n)))
    # Z A^-1: solve Y A = Z for Y (A lower triangular).
    y = torch.linalg.solve_triangular(torch.as_tensor(bart), z, upper=False, left=False)
    return y @ upper.transpose(-1, -2)


def _allocate(total: int, weights: list[float]) -> list[int]:
    raw = np.array(weights) / np.sum(weights) * total
    counts = np.floor(raw).astype(int)
    counts[np.argsort(raw - counts)[::-1][: total - counts.sum()]] += 1
    return counts.tolist()


@dataclass
class _SiteDraw:
    site: SiteModel
    true: pd.DataFrame
    observed: pd.DataFrame
    fcns: np.ndarray
    g1: np.ndarray


def _simulate_site(site: SiteModel, n: int, effect_mats, ind, config, rng, chunk: int = 64) -> tuple[_SiteDraw, int]:
    true = sample_attributes(site.cohort, site.spec, n, rng)
    observed = apply_missingness(true, site.cohort, rng)
    k = len(YEO7)
    psi_mean = site.psi + site.spec.global_signal + network_shift(true, effect_mats)
    noise = rng.normal(size=(n, k, k))
    noise = (noise + np.swapaxes(noise, 1, 2)) / np.sqrt(2 * config.network_dof)  # GOE: var 1/dof (off-diag)
    root = np.linalg.cholesky(site.psi)
    iso = rng.normal(size=(n, k, k)) * config.isotropic_fraction * np.linalg.eigvalsh(site.psi)[0]
    iso = np.triu(iso) + np.swapaxes(np.triu(iso, 1), 1, 2)  # symmetric, every vech entry var floor
    d_subj = root @ noise @ root.T + rng.normal(0, config.global_fraction * site.psi.mean(), (n, 1, 1)) + iso
    floor = config.clip_fraction * np.linalg.eigvalsh(site.psi)[0]
    psi_s, _ = clip_pd(psi_mean + d_subj, floor)
    clipped = int((np.linalg.eigvalsh(psi_mean + d_subj)[:, 0] < floor).sum())
    cov = site.cov[None] + ind @ (psi_s - site.psi) @ ind.T
    fcns = np.empty((n,) + site.cov.shape, dtype=np.float32)
    g1 = np.empty((n, k, k))
    kappa = config.idiosyncrasy
    base = torch.as_tensor(kappa * site.cov)
    ind_t = torch.as_tensor(ind, dtype=torch.float64)
    scale = torch.as_tensor(np.sqrt(np.diag(site.cov)))[:, None]
    for start in range(0, n, chunk):
        x = sample_time_series(cov[start:start + chunk], kappa, site.spec.timepoints, rng)
        fcn = compute_fcns(x.numpy())
        fcns[start:start + chunk] = fcn
        # The oracle sees what FCN methods see: the correlation matrix, rescaled to the site's
        # expected ROI variances (the subject's own variances would leak extra information).
        a = base + site.spec.timepoints * scale * torch.as_tensor(fcn) * scale.T
        chol = torch.linalg.cholesky(a)
        g1[start:start + chunk] = (ind_t.T @ torch.cholesky_solve(ind_t.expand(len(x), -1, -1), chol)).numpy()
    return _SiteDraw(site, true, observed, fcns, g1), clipped


# --------------------------------------------------------------------------------------------------
# Oracle hypotheses
# --------------------------------------------------------------------------------------------------
def pooled_effects(pool: pd.DataFrame, effect_mats: dict[str, np.ndarray]) -> np.ndarray:
    """`(P, q)` summed effect of all attributes for each pooled draw."""
    total = np.zeros((len(pool), len(vech(next(iter(effect_mats.values()))))))
    for b, mat in effect_mats.items():
        total += EFFECTS[b].code(pool[b])[:, None] * vech(mat)[None]
    return total


def build_hypotheses(key: str, kind: str, classes: list, pool: pd.DataFrame, total: np.ndarray, site: SiteModel,
                     bins: int = 20) -> Hypotheses:
    """Prior of vech(Psi_s) for each value (class or quantile bin) of `key` at one site.

    `pool` holds true attribute draws from the site's distribution and `total` `(P, q)` their summed
    effects: the prior p(h | site) and the conditional mean/covariance of the effects given h come from it.
    """
    values = pool[key].to_numpy()
    if kind == "continuous":
        edges = np.unique(np.quantile(values.astype(float), np.linspace(0, 1, bins + 1)))
        group = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        labels = np.arange(len(edges) - 1)
        hyp_values = np.array([values[group == h].mean() if (group == h).any() else np.nan for h in labels])
    else:
        lookup = {c: i for i, c in enumerate(classes)}
        group = pd.Series(values if kind == "categorical" else values.astype(float)).map(lookup).to_numpy()
        labels = np.arange(len(classes))
        hyp_values = labels.astype(float)
    counts = np.array([(group == h).sum() for h in labels])
    base = vech(site.psi + site.spec.global_signal)
    means = np.stack([base + (total[group == h].mean(0) if counts[h] else 0.0) for h in labels])
    resid = total - means[group] + base
    cov = site.subject_cov + resid.T @ resid / max(len(pool) - len(labels), 1)
    with np.errstate(divide="ignore"):
        log_prior = np.log(counts / counts.sum())
    return Hypotheses(means=means, cov=cov, log_prior=log_prior, values=hyp_values)


def oracle_scores(draws: list[_SiteDraw], fit: LaplaceFit, effect_mats, config: SimulationConfig,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per attribute: log-odds `(S,)` (binary), class posteriors `(S, C)` (categorical), posterior mean `(S,)`."""
    from datasets_scripts.attributes import load_registry

    registry = load_registry()
    keys = [k for k in draws[0].true.columns if k in registry]
    total = sum(len(d.true) for d in draws)
    scores = {k: (np.zeros((total, len(registry[k].classes))) if registry[k].kind == "categorical" else np.zeros(total))
              for k in keys}
    start = 0
    for draw in draws:
        rows = np.arange(start, start + len(draw.true))
        start += len(draw.true)
        pool = sample_attributes(draw.site.cohort, draw.site.spec, config.oracle_pool, rng)
        total_effects = pooled_effects(pool, effect_mats)
        for key in keys:
            attr = registry[key]
            classes = list(attr.classes) if attr.kind == "categorical" else [0.0, 1.0]
            hyp = build_hypotheses(key, attr.kind, classes, pool, total_effects, draw.site)
            post = posterior(fit, rows, hyp)
            if attr.kind == "binary":
                scores[key][rows] = np.log(np.clip(post[:, 1], 1e-300, None)) - np.log(np.clip(post[:, 0], 1e-300, None))
            elif attr.kind == "categorical":
                scores[key][rows] = post
            else:
                ok = ~np.isnan(hyp.values)
                scores[key][rows] = post[:, ok] @ hyp.values[ok] / post[:, ok].sum(1)
    return scores


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def simulate(config: SimulationConfig = SimulationConfig()) -> SubjectTable:
    """Simulate `config.subjects` subjects (see `_simulate`); BLAS runs single-threaded, which is
    faster for these batched small matrices and robust to CPU contention."""
    with threadpool_limits(1):
        return _simulate(config)


def _simulate(config: SimulationConfig) -> SubjectTable:
    """Simulate `config.subjects` subjects; returns a `SubjectTable` whose `info` holds the ground truth.

    info keys: ``effect_maps`` {attribute: `(N, N)` float32 covariance change per unit code},
    ``planted_pairs`` {attribute: [(network, network, weight)]}, ``effect_codes`` {attribute:
    coding}, ``true_attributes`` (frame, no missing values), ``oracle_scores`` {attribute: array},
    ``zero_shot_datasets`` / ``seen_datasets``, ``sites`` (per-site parameters), ``psd_clips``,
    ``timings`` (seconds), ``config``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if config.subjects < 1:
        raise ValueError(f"Need at least one subject, got subjects={config.subjects}.")
    atlas = load_atlas(config.atlas)
    net = yeo7_assignment(atlas)
    ind = np.eye(len(YEO7))[net]
    parcellation = hcp_parcellation(atlas.name)
    templates = {}
    for group in sorted({c.template for c in config.cohorts}):
        fcn = load_group_fcn(parcellation, group)
        if fcn.shape != (atlas.num_rois, atlas.num_rois):
            raise ValueError(f"HCP template {parcellation}/{group} has N={fcn.shape[0]} ROIs but atlas "
                             f"{atlas.name!r} has N={atlas.num_rois}.")
        templates[group] = clip_pd(fcn, 1e-3)[0]
    main = templates.get("main", next(iter(templates.values())))
    psi_ref = np.linalg.inv(ind.T @ np.linalg.solve(main + config.network_signal * ind @ ind.T, ind))
    effect_mats = effect_matrices(psi_ref, subject_variability(psi_ref, config), EFFECTS, config.effect_scale)

    rng = np.random.default_rng(config.seed)
    draws: list[_SiteDraw] = []
    clips = 0
    for cohort, n_cohort in zip(config.cohorts, _allocate(config.subjects, [c.weight for c in config.cohorts])):
        for spec, n_site in zip(cohort.sites, _allocate(n_cohort, [1.0] * len(cohort.sites))):
            site = build_site(cohort, spec, templates[cohort.template], atlas.coords, net, config, rng)
            if n_site == 0:
                continue
            draw, clipped = _simulate_site(site, n_site, effect_mats, ind, config, rng)
            draws.append(draw)
            clips += clipped
    timings["sample"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    g1 = np.concatenate([d.g1 for d in draws])
    psi_site = np.concatenate([np.broadcast_to(d.site.psi, (len(d.true),) + d.site.psi.shape) for d in draws])
    timepoints = np.concatenate([np.full(len(d.true), d.site.spec.timepoints) for d in draws])
    fit = laplace_fit(g1, psi_site, config.idiosyncrasy, atlas.num_rois + 1 + config.idiosyncrasy, timepoints)
    scores = oracle_scores(draws, fit, effect_mats, config, rng)
    timings["oracle"] = time.perf_counter() - t1

    meta = pd.concat([
        pd.DataFrame({"subject_id": [f"{d.site.spec.name}_{i:05d}" for i in range(len(d.true))],
                      "dataset": d.site.cohort.name, "site": d.site.spec.name, "atlas": atlas.name})
        .join(d.observed.reset_index(drop=True)) for d in draws], ignore_index=True)
    info = {
        "source": "simulator",
        "config": {k: v for k, v in asdict(config).items() if k != "cohorts"},
        "effect_maps": {k: (ind @ m @ ind.T).astype(np.float32) for k, m in effect_mats.items()},
        "planted_pairs": {k: list(EFFECTS[k].pairs) for k in effect_mats},
        "effect_codes": {k: ({"level": e.level} if e.level is not None else {"center": e.center, "scale": e.scale})
                         for k, e in EFFECTS.items()},
        "true_attributes": pd.concat([d.true for d in draws], ignore_index=True),
        "oracle_scores": scores,
        "zero_shot_datasets": [c.name for c in config.cohorts if c.zero_shot],
        "seen_datasets": [c.name for c in config.cohorts if not c.zero_shot],
        "sites": {d.site.spec.name: {**asdict(d.site.spec), "dataset": d.site.cohort.name,
                                     "template": d.site.cohort.template} for d in draws},
        "psd_clips": clips,
        "timings": timings,
    }
    timings["total"] = time.perf_counter() - t0
    return SubjectTable(np.concatenate([d.fcns for d in draws]), meta, info)
