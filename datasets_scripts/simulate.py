"""Multi-site cohort simulator on real HCP connectivity, with ground truth and an oracle.

Generative model for subject s of site k (N ROIs, K = 7 Yeo networks, L the `(N, K)` indicator):

1. Attributes: `sample_attributes` draws the 19 default attributes with realistic correlations
   (IQ subscales share a general factor; education follows age in children and IQ in adults;
   conditions come from correlated liabilities with sex-dependent prevalence; ADOS and the ADHD
   index follow the diagnoses; BMI follows age and diagnoses). Cohorts measure only some of them.
   Head motion (`sample_motion`) is a per-subject nuisance, higher in children, ADHD and autism.
2. Site covariance C_k `(N, N)`: the real HCP group FCN (brainspace; *main* group for training
   cohorts, *holdout* for zero-shot ones), plus a scanner-specific smooth spatial edge bias, plus a
   network-specific shared signal u L L^T (each network's common fluctuation; it gives the network
   level room to vary, and brings within-network FC to the level of real individual HCP FCNs), plus
   white-noise variance; made positive definite by eigenvalue clipping.
3. The effect basis B `(N, m)` (`EffectModel`): L, one indicator per planted region, seeded
   distributed loadings and smooth head-motion fields; Psi_k = (B^T C_k^-1 B)^-1 `(m, m)`
   (C_k + B D B^T is positive definite iff Psi_k + D is). A subject's Psi_s differs from Psi_k on p
   entries (network pairs, planted regions' couplings to their target networks, the distributed
   block, the motion fields): Psi_s = Psi_k + g_k G + sum_a code_a(value) E_a + motion_s F + D_s, where
   E_a are the attributes' effects at three scales (`effects.json`: ROI-level region profiles,
   network blocks, whole-brain global coupling / segregation / distributed pattern; several
   attributes have none), G the site's global signal on every network pair, F the motion fields, and
   D_s subject variability (Wishart-like around the network-level matrix plus a global-signal term;
   independent on region couplings and distributed coefficients). Psi_s is clipped to positive
   definite (counted).
4. Subject covariance M_s = C_k + B (Psi_s - Psi_k) B^T; Sigma_s ~ InverseWishart(nu, c M_s) with
   c = nu - N - 1 (edge-level subject idiosyncrasy, E Sigma_s = M_s); a T_k x N time series
   X ~ N(0, Sigma_s), AR(1)-correlated over time with the site's coefficient (effective T shorter
   than T), is drawn and its Pearson correlation is the subject's FCN, so estimation noise behaves
   like real data.

The oracle (`oracle.py`) scores every attribute by its posterior under this model: the likelihood
of Psi_s's p varying entries (with the motion fields tied to one motion coordinate) given the FCN as
a Wishart with the site's effective T, with a Gaussian prior per hypothesis whose mean holds every
effect. Zero-shot cohorts differ by more than the template: unseen scanners with stronger biases,
other scan lengths, autocorrelation, motion, noise, global signal, age ranges and prevalences.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from scipy.signal import lfilter

from datasets_scripts.effects import EFFECT_SET, EFFECTS, YEO7, Effect, EffectSet, resolve_regions
from datasets_scripts.hcp import load_group_fcn
from datasets_scripts.oracle import Hypotheses, LaplaceFit, laplace_fit, posterior, vech, wishart_like_cov
from datasets_scripts.subjects import SubjectTable
from datasets_scripts.timeseries_store import standardized_float16
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
        timepoints: scan length T (volumes).
        noise_var: extra white-noise variance per ROI (lowers all correlations).
        global_signal: added to every network coupling (raises all correlations).
        bias_scale: amplitude of the scanner's smooth spatial edge bias (see `simulate.site_edge_bias`).
        eyes_closed: fraction of subjects scanned with eyes closed.
        ar1: lag-1 temporal autocorrelation of the time series (effective T = T (1 - ar1^2) / (1 + ar1^2)).
        motion: typical subject head motion (the median motion amplitude, see `sample_motion`).
    """

    name: str
    timepoints: int
    noise_var: float
    global_signal: float
    bias_scale: float
    eyes_closed: float
    ar1: float = 0.0
    motion: float = 0.0

    @property
    def effective_timepoints(self) -> float:
        """T_eff = tr(R)^2 / tr(R^2) of the AR(1) correlation R over time: the Wishart dof of the scan."""
        return self.timepoints * (1 - self.ar1 ** 2) / (1 + self.ar1 ** 2)

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
               _sites("ASD", [(310, 0.30, 0.02, 0.04, 0.2, 0.35, 0.06), (270, 0.40, 0.06, 0.05, 0.5, 0.45, 0.08), (340, 0.25, 0.00, 0.03, 0.8, 0.25, 0.05),
                              (330, 0.35, 0.04, 0.06, 0.2, 0.5, 0.07)]),
               (6, 40), 0.8, {"autism": 0.45, "adhd": 0.12, "anxiety": 0.12, "ocd": 0.04, "depression": 0.05},
               _ALL + ("ados_total", "autism", "adhd", "anxiety", "ocd")),
    CohortSpec("SimADHD", "main", False, 0.18,
               _sites("ADHD", [(230, 0.35, 0.05, 0.05, 0.2, 0.4, 0.09), (310, 0.30, 0.02, 0.04, 0.8, 0.3, 0.07), (370, 0.40, 0.03, 0.05, 0.3, 0.5, 0.08)]),
               (7, 22), 0.65, {"adhd": 0.45, "autism": 0.06, "anxiety": 0.12, "depression": 0.06},
               _ALL + ("adhd_index", "adhd", "autism", "anxiety")),
    CohortSpec("SimPsych", "main", False, 0.22,
               _sites("PSY", [(360, 0.30, 0.03, 0.04, 0.2, 0.3, 0.05), (450, 0.25, 0.02, 0.03, 0.2, 0.25, 0.04), (330, 0.40, 0.05, 0.06, 0.8, 0.5, 0.06),
                              (350, 0.35, 0.04, 0.05, 0.5, 0.4, 0.05)]),
               (18, 65), 0.5, {"depression": 0.3, "schizophrenia": 0.18, "bipolar": 0.15, "anxiety": 0.3, "ocd": 0.12,
                               "ptsd": 0.18, "adhd": 0.06},
               _ALL + ("depression", "schizophrenia", "bipolar", "anxiety", "ocd", "ptsd", "adhd")),
    CohortSpec("SimLifespan", "main", False, 0.13,
               _sites("LIFE", [(430, 0.25, 0.02, 0.03, 0.2, 0.2, 0.05), (380, 0.30, 0.04, 0.04, 0.5, 0.35, 0.06), (380, 0.30, 0.03, 0.05, 0.8, 0.45, 0.05)]),
               (8, 85), 0.48, {"depression": 0.12, "anxiety": 0.15, "adhd": 0.08, "ptsd": 0.08, "ocd": 0.04,
                               "autism": 0.03, "bipolar": 0.03, "schizophrenia": 0.02},
               _ALL + CONDITIONS + ("adhd_index",)),
    # Zero-shot cohorts: holdout template, unseen sites, stronger scanner biases, other T/noise/ages/prevalences.
    CohortSpec("SimASD-Z", "holdout", True, 0.09,
               _sites("ZASD", [(280, 0.45, 0.08, 0.10, 0.2, 0.55, 0.11), (540, 0.22, 0.01, 0.09, 0.8, 0.2, 0.06)]),
               (10, 50), 0.75, {"autism": 0.4, "adhd": 0.15, "anxiety": 0.2, "ocd": 0.06, "depression": 0.1},
               _ALL + ("ados_total", "autism", "adhd", "anxiety", "ocd", "depression")),
    CohortSpec("SimADHD-Z", "holdout", True, 0.07,
               _sites("ZADHD", [(230, 0.45, 0.07, 0.10, 0.2, 0.5, 0.1), (420, 0.28, 0.00, 0.09, 0.8, 0.3, 0.07)]),
               (8, 30), 0.6, {"adhd": 0.4, "autism": 0.08, "anxiety": 0.15, "depression": 0.08},
               _ALL + ("adhd_index", "adhd", "autism", "anxiety", "depression")),
    CohortSpec("SimPsych-Z", "holdout", True, 0.09,
               _sites("ZPSY", [(680, 0.20, 0.06, 0.10, 0.2, 0.25, 0.05), (300, 0.45, 0.02, 0.09, 0.6, 0.55, 0.09)]),
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
# Effects (`effects.py` reads them from `effects.json`)
# --------------------------------------------------------------------------------------------------
_YEO17_TO_7 = {"TempPar": "Default"}


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
        effect_scale: multiplies every effect strength (the separabilities d' of `effects.json`).
        oracle_pool: attribute draws per site used by the oracle for p(h | site) and nuisance moments.
        roi_variability: SD across subjects of a planted region's coupling to each network (covariance units).
        distributed_variability: SD across subjects of each coefficient of the distributed pattern.
        distributed_rank: number of seeded ROI loadings of the distributed pattern.
        motion_fields: spatial fields of the head-motion artefact (Gaussian bumps at spread ROI centroids).
        motion_width_mm: width of each motion field.
        effects: the planted effects (`effects.load_effects`).
        keep_timeseries: keep every subject's simulated time series (standardised, float16) in the table, for
            sliding-window FCNs in training; the draws are the same with or without.
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
    roi_variability: float = 0.03
    distributed_variability: float = 0.0015
    distributed_rank: int = 2
    motion_fields: int = 8
    motion_width_mm: float = 30.0
    effects: EffectSet = EFFECT_SET
    cohorts: tuple[CohortSpec, ...] = DEFAULT_COHORTS
    keep_timeseries: bool = False


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
class EffectModel:
    """The low-rank space where attributes and nuisances change a subject's covariance.

    A subject's covariance is C_k + B (Psi_s - Psi_k) B^T with the basis B `(N, m)`: the K Yeo-7
    network indicators, one indicator per planted region, `distributed_rank` seeded ROI loadings with
    zero mean inside every network (invisible to network block means), and `motion_fields` smooth
    spatial fields of the head-motion artefact. Psi_k = (B^T C_k^-1 B)^-1. Only p entries of Psi_s
    vary (`rows`, `cols`, upper triangle): every network pair, each planted region's coupling to the
    networks its effects target, the distributed block and the motion fields' variances. Vectors over those p entries
    ("coordinates") describe every effect.

    Attributes:
        basis: `(N, m)` B.
        basis_names: m names (networks, region names, ``distributed_<i>``, ``motion_<i>``).
        rows, cols: `(p,)` the varying entries of Psi.
        directions: {attribute: {component: `(p,)` change per unit code}} (components roi, blocks, whole_brain).
        motion: `(p,)` change per unit of head motion.
        global_signal: `(p,)` change per unit of site global signal (every network pair).
        network_entries: `(p,)` bool, the network-pair coordinates.
        region_columns: {region name: its column in `basis`}.
        effects: {attribute: its `Effect` definition (the code of its values)}.
        design: `(p, d)` the oracle's d coordinates phi (entries move as design @ phi: every entry on its
            own, except the motion fields, which move together by the subject's motion).
    """

    basis: np.ndarray
    basis_names: list[str]
    rows: np.ndarray
    cols: np.ndarray
    directions: dict[str, dict[str, np.ndarray]]
    motion: np.ndarray
    global_signal: np.ndarray
    network_entries: np.ndarray
    region_columns: dict[str, int]
    effects: dict[str, Effect] = field(default_factory=dict)
    design: np.ndarray | None = None

    @property
    def design_pinv(self) -> np.ndarray:
        """`(d, p)` the pseudo-inverse of `design` (exact on its span)."""
        return np.linalg.pinv(self.design)

    def total(self, key: str) -> np.ndarray:
        return sum(self.directions[key].values())

    def edge_map(self, coords: np.ndarray) -> np.ndarray:
        """`(..., N, N)` covariance change B unvech(coords) B^T of coordinate vectors `(..., p)`."""
        m = self.basis.shape[1]
        mat = np.zeros(coords.shape[:-1] + (m, m))
        mat[..., self.rows, self.cols] = coords
        mat[..., self.cols, self.rows] = coords
        return self.basis @ mat @ self.basis.T


def _distributed_loadings(net: np.ndarray, rank: int, seed: int) -> np.ndarray:
    """`(N, rank)` seeded loadings, each with zero mean inside every network and RMS 1."""
    u = np.random.default_rng(seed).normal(size=(len(net), rank))
    ind = np.eye(len(YEO7))[net]
    u -= ind @ np.linalg.lstsq(ind, u, rcond=None)[0]
    return u / np.sqrt((u ** 2).mean(0))


def motion_fields(coords: np.ndarray, fields: int, width_mm: float) -> np.ndarray:
    """`(N, fields)` Gaussian bumps at spread ROI centroids (farthest-point order from ROI 0), scaled so that
    the mean over ROIs of the summed squared bumps is 1: motion adds shared variance to nearby regions, which
    inflates short-distance correlations and, through the larger variances, deflates long-distance ones."""
    centres = [0]
    dist = ((coords - coords[0]) ** 2).sum(1)
    for _ in range(fields - 1):
        centres.append(int(np.argmax(dist)))
        dist = np.minimum(dist, ((coords - coords[centres[-1]]) ** 2).sum(1))
    bumps = np.exp(-((coords[:, None] - coords[centres][None]) ** 2).sum(-1) / (2 * width_mm ** 2))
    return bumps / np.sqrt((bumps ** 2).sum(1).mean())


def effect_basis(atlas: Atlas, net: np.ndarray, config: SimulationConfig) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """(B `(N, m)`, column names, {region name: column}) for an atlas (see `EffectModel`)."""
    ind = np.eye(len(YEO7))[net]
    regions = resolve_regions(config.effects, atlas)
    roi_cols: list[int] = []
    columns: dict[str, int] = {}
    for name, idx in regions.items():
        if idx not in roi_cols:
            roi_cols.append(idx)
        columns[name] = len(YEO7) + roi_cols.index(idx)
    eye = np.eye(atlas.num_rois)[:, roi_cols]
    dist = _distributed_loadings(net, config.distributed_rank, config.effects.distributed_seed)
    motion = motion_fields(atlas.coords, config.motion_fields, config.motion_width_mm)
    basis = np.concatenate([ind, eye, dist, motion], 1)
    names = (list(YEO7) + [atlas.labels[i] for i in roi_cols] + [f"distributed_{i}" for i in range(dist.shape[1])]
             + [f"motion_{i}" for i in range(motion.shape[1])])
    return basis, names, columns


def _coordinates(k: int, targets: list[list[int]], d: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """The varying entries of Psi for K networks, region columns coupled to their target networks
    (`targets[j]`: network indices of region column K + j), d distributed and f motion columns."""
    rows, cols = [list(x) for x in np.triu_indices(k)]
    r = len(targets)
    for j, nets in enumerate(targets):  # a region's coupling to each network its effects target
        rows += sorted(nets)
        cols += [k + j] * len(nets)
    rd, cd = np.triu_indices(d)
    rows += list(rd + k + r)
    cols += list(cd + k + r)
    rows += list(range(k + r + d, k + r + d + f))
    cols += list(range(k + r + d, k + r + d + f))
    return np.array(rows), np.array(cols)


def subject_variability(psi_net: np.ndarray, model_or_p, config: SimulationConfig) -> np.ndarray:
    """Prior covariance `(p, p)` of a subject's coordinates: on the network pairs Wishart-like around the
    site's network-level matrix Psi_net `(K, K)`, a global-signal term and an isotropic floor (a fraction of
    Psi_net's smallest eigenvalue, so no network contrast is noise-free); independent region couplings
    (`roi_variability`) and distributed coefficients (`distributed_variability`); none on the motion fields
    (motion is a per-subject nuisance, see `sample_motion`). With an int instead of a model: the network
    block only."""
    q = len(vech(psi_net))
    floor = (config.isotropic_fraction * np.linalg.eigvalsh(psi_net)[0]) ** 2
    glob = (config.global_fraction * psi_net.mean()) ** 2
    net_cov = wishart_like_cov(psi_net, config.network_dof) + glob * np.ones((q, q)) + floor * np.eye(q)
    if isinstance(model_or_p, int):
        return net_cov
    model = model_or_p
    p = len(model.rows)
    out = np.zeros((p, p))
    out[:q, :q] = net_cov
    names = np.array(model.basis_names)
    kind_col = np.array([n.split("_")[0] if n.startswith(("distributed_", "motion_")) else "roi" for n in names])
    kind_col[: len(YEO7)] = "network"
    kinds = kind_col[model.cols]
    var = np.where(kinds == "roi", config.roi_variability ** 2, np.where(kinds == "distributed",
                                                                        config.distributed_variability ** 2, 0.0))
    var[:q] = 0.0
    out[np.arange(q, p), np.arange(q, p)] = var[q:]
    return out


def _mahalanobis(v: np.ndarray, omega: np.ndarray) -> float:
    support = np.flatnonzero(np.abs(v) > 0)
    sub = v[support]
    return float(np.sqrt(sub @ np.linalg.solve(omega[np.ix_(support, support)], sub)))


def effect_model(atlas: Atlas, net: np.ndarray, psi_ref: np.ndarray, config: SimulationConfig) -> tuple[EffectModel, np.ndarray]:
    """The `EffectModel` of an atlas and the reference subject variability `(p, p)`.

    Each component of an attribute's effect (see `effects.py`) is a coordinate pattern scaled to
    ``separability * effect_scale`` in Mahalanobis norm under the reference subject variability (d' per
    unit code, so difficulty does not depend on the atlas): blocks put ``weight * sqrt(Psi_aa Psi_bb)`` on
    their network pairs (Psi_ref the main template's network-level matrix); roi puts ``weight`` on the
    region's coupling to each target network; whole_brain adds unit-d' patterns for global coupling (every
    network pair, ``sqrt(Psi_aa Psi_bb)``), segregation (+ within, - between) and the distributed pattern
    (the cross-coupling of the first two distributed loadings), weighted.
    """
    k = len(YEO7)
    basis, names, region_cols = effect_basis(atlas, net, config)
    r = len(names) - k - config.distributed_rank - config.motion_fields
    targets: list[set[int]] = [set() for _ in range(r)]
    for eff in config.effects.effects.values():
        for reg in eff.regions:
            targets[region_cols[reg.region] - k] |= {YEO7.index(t) for t in reg.targets}
    rows, cols = _coordinates(k, [sorted(t) for t in targets], config.distributed_rank, config.motion_fields)
    p = len(rows)
    q = k * (k + 1) // 2
    network = np.zeros(p, bool)
    network[:q] = True
    proto = EffectModel(basis, names, rows, cols, {}, np.zeros(p), network.astype(float), network, region_cols)
    omega = subject_variability(psi_ref, proto, config)
    d = np.sqrt(np.diag(psi_ref))
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(rows, cols))}

    def net_entry(a: str, b: str) -> int:
        i, j = sorted((YEO7.index(a), YEO7.index(b)))
        return index[(i, j)]

    def scaled(v: np.ndarray, sep: float) -> np.ndarray:
        return v * sep * config.effect_scale / _mahalanobis(v, omega)

    whole = {}
    g = np.zeros(p)
    g[:q] = (d[rows[:q]] * d[cols[:q]])
    whole["global"] = g
    seg = np.where(rows[:q] == cols[:q], 1.0, -1.0) * d[rows[:q]] * d[cols[:q]]
    whole["segregation"] = np.concatenate([seg, np.zeros(p - q)])
    dist = np.zeros(p)
    dist[index[(k + r, k + r + 1)]] = 1.0
    whole["distributed"] = dist
    whole = {t: v / _mahalanobis(v, omega) for t, v in whole.items()}

    directions: dict[str, dict[str, np.ndarray]] = {}
    for key, eff in config.effects.effects.items():
        comp = {}
        if eff.pairs:
            v = np.zeros(p)
            for a, b, w in eff.pairs:
                i, j = YEO7.index(a), YEO7.index(b)
                v[net_entry(a, b)] = w * d[i] * d[j]
            comp["blocks"] = scaled(v, eff.block_separability)
        if eff.regions:
            v = np.zeros(p)
            for reg in eff.regions:
                for t in reg.targets:
                    v[index[(YEO7.index(t), region_cols[reg.region])]] += reg.weight
            comp["roi"] = scaled(v, eff.roi_separability)
        if eff.whole_brain:
            comp["whole_brain"] = scaled(sum(w * whole[t] for t, w in eff.whole_brain), eff.whole_brain_separability)
        directions[key] = comp
    motion = np.zeros(p)
    motion[p - config.motion_fields:] = 1.0
    free = np.flatnonzero(motion == 0)
    design = np.zeros((p, len(free) + 1))
    design[free, np.arange(len(free))] = 1.0
    design[:, -1] = motion
    model = EffectModel(basis, names, rows, cols, directions, motion, network.astype(float), network, region_cols,
                        dict(config.effects.effects), design)
    return model, omega


@dataclass
class SiteModel:
    """One site's fixed parameters: covariance `(N, N)`, Psi `(m, m)` in the effect basis, subject variability."""

    cohort: CohortSpec
    spec: SiteSpec
    cov: np.ndarray
    psi: np.ndarray
    subject_cov: np.ndarray  # (p, p) prior covariance of a subject's coordinates

    def coordinates(self, model: EffectModel) -> np.ndarray:
        """`(p,)` the site's Psi at the varying entries."""
        return self.psi[model.rows, model.cols]


def build_site(cohort: CohortSpec, spec: SiteSpec, template: np.ndarray, coords: np.ndarray, net: np.ndarray,
               config: SimulationConfig, rng: np.random.Generator, model: EffectModel) -> SiteModel:
    n = template.shape[0]
    cov, _ = clip_pd(template + site_edge_bias(coords, spec.bias_scale, rng), 0.02)
    ind = np.eye(len(YEO7))[net]
    cov = cov + config.network_signal * ind @ ind.T + spec.noise_var * np.eye(n)
    psi_net = np.linalg.inv(ind.T @ np.linalg.solve(cov, ind))
    psi = np.linalg.inv(model.basis.T @ np.linalg.solve(cov, model.basis))
    psi = (psi + psi.T) / 2
    return SiteModel(cohort, spec, cov, psi, subject_variability((psi_net + psi_net.T) / 2, model, config))


def attribute_shift(attrs: pd.DataFrame, model: EffectModel) -> np.ndarray:
    """`(S, p)` sum of attribute effects for S subjects (true attribute values)."""
    shift = np.zeros((len(attrs), len(model.rows)))
    for key in model.directions:
        shift += model.effects[key].code(attrs[key])[:, None] * model.total(key)[None]
    return shift


def sample_motion(attrs: pd.DataFrame, site: SiteSpec, rng: np.random.Generator) -> np.ndarray:
    """`(S,)` head-motion amplitude per subject: log-normal around the site's typical motion, higher in
    children and in ADHD and autism (as in real cohorts' mean framewise displacement)."""
    age = attrs["age"].to_numpy(float)
    child = np.clip((18 - age) / 12, 0, 1)
    # Group differences of mean framewise displacement: children move much more; ADHD and autism
    # somewhat more (d ~ 0.3 and 0.2 on log motion).
    log_m = (np.log(max(site.motion, 1e-9)) + 0.5 * rng.normal(size=len(attrs)) + 0.4 * child
             + 0.15 * attrs["adhd"].to_numpy(float) + 0.1 * attrs["autism"].to_numpy(float))
    return np.exp(log_m) if site.motion > 0 else np.zeros(len(attrs))


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def ar1_noise(shape: tuple[int, int, int], phi: float, rng: np.random.Generator) -> np.ndarray:
    """`(S, T, N)` stationary AR(1) series along T with unit variance and lag-1 correlation `phi`."""
    e = rng.normal(size=shape)
    if phi == 0:
        return e
    e[:, 0] /= np.sqrt(1 - phi ** 2)
    return lfilter([np.sqrt(1 - phi ** 2)], [1.0, -phi], e, axis=1)


def sample_time_series(cov: np.ndarray, kappa: float, timepoints: int, rng: np.random.Generator,
                       ar1: float = 0.0) -> torch.Tensor:
    """X `(S, T, N)` with Sigma_s ~ InverseWishart(N + 1 + kappa, kappa cov_s) and rows ~ N(0, Sigma_s),
    AR(1)-correlated over time with lag-1 correlation `ar1`.

    With kappa cov = U U^T (Cholesky) and Bartlett's W = U^-T A A^T U^-1 ~ Wishart(nu, (kappa cov)^-1),
    Sigma = W^-1 = U A^-T A^-1 U^T, so X = Z A^-1 U^T with Z `(T, N)` (independent ROIs, AR(1) in time).
    """
    s, n, _ = cov.shape
    nu = n + 1 + kappa
    upper = torch.linalg.cholesky(torch.as_tensor(kappa * cov, dtype=torch.float64))
    bart = np.tril(rng.normal(size=(s, n, n)), -1)
    bart[:, np.arange(n), np.arange(n)] = np.sqrt(rng.chisquare(nu - np.arange(n), size=(s, n)))
    z = torch.as_tensor(ar1_noise((s, timepoints, n), ar1, rng))
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
    motion: np.ndarray
    series: list[np.ndarray] | None = None


def _simulate_site(site: SiteModel, n: int, model: EffectModel, config, rng, chunk: int = 64) -> tuple[_SiteDraw, int]:
    true = sample_attributes(site.cohort, site.spec, n, rng)
    observed = apply_missingness(true, site.cohort, rng)
    motion = sample_motion(true, site.spec, rng)
    base = site.coordinates(model)
    mean = (base + site.spec.global_signal * model.global_signal + attribute_shift(true, model)
            + motion[:, None] * model.motion[None])
    omega = site.subject_cov
    sd = np.sqrt(np.diag(omega))
    dense = np.flatnonzero(model.network_entries)
    noise = rng.normal(size=(n, len(base))) * sd[None]
    noise[:, dense] = rng.normal(size=(n, len(dense))) @ np.linalg.cholesky(omega[np.ix_(dense, dense)]).T
    coords = mean + noise
    m = model.basis.shape[1]
    psi_mean = np.broadcast_to(site.psi, (n, m, m)).copy()
    psi_mean[:, model.rows, model.cols] = coords
    psi_mean[:, model.cols, model.rows] = coords
    floor = config.clip_fraction * np.linalg.eigvalsh(site.psi)[0]
    psi_s, _ = clip_pd(psi_mean, floor)
    clipped = int((np.linalg.eigvalsh(psi_mean)[:, 0] < floor).sum())
    cov = site.cov[None] + model.basis @ (psi_s - site.psi) @ model.basis.T
    fcns = np.empty((n,) + site.cov.shape, dtype=np.float32)
    g1 = np.empty((n, m, m))
    kappa = config.idiosyncrasy
    base_a = torch.as_tensor(kappa * site.cov)
    basis_t = torch.as_tensor(model.basis, dtype=torch.float64)
    scale = torch.as_tensor(np.sqrt(np.diag(site.cov)))[:, None]
    t_eff = site.spec.effective_timepoints
    series = [] if config.keep_timeseries else None
    for start in range(0, n, chunk):
        x = sample_time_series(cov[start:start + chunk], kappa, site.spec.timepoints, rng, site.spec.ar1)
        fcn = compute_fcns(x.numpy())
        fcns[start:start + chunk] = fcn
        if series is not None:
            series += list(standardized_float16(x.numpy()))
        # The oracle sees what FCN methods see: the correlation matrix, rescaled to the site's expected
        # ROI variances (the subject's own variances would leak extra information), as a Wishart with the
        # scan's effective T (temporal autocorrelation makes the sample covariance vary as with fewer volumes).
        a = base_a + t_eff * scale * torch.as_tensor(fcn) * scale.T
        chol = torch.linalg.cholesky(a)
        g1[start:start + chunk] = (basis_t.T @ torch.cholesky_solve(basis_t.expand(len(x), -1, -1), chol)).numpy()
    return _SiteDraw(site, true, observed, fcns, g1, motion, series), clipped


# --------------------------------------------------------------------------------------------------
# Oracle hypotheses
# --------------------------------------------------------------------------------------------------
def pooled_effects(pool: pd.DataFrame, motion: np.ndarray, model: EffectModel) -> np.ndarray:
    """`(P, p)` summed effect of all attributes and head motion for each pooled draw."""
    return attribute_shift(pool, model) + motion[:, None] * model.motion[None]


def build_hypotheses(key: str, kind: str, classes: list, pool: pd.DataFrame, total: np.ndarray, site: SiteModel,
                     model: EffectModel, bins: int = 20, gram: np.ndarray | None = None) -> Hypotheses:
    """Prior of a subject's coordinates for each value (class or quantile bin) of `key` at one site.

    `pool` holds true attribute draws from the site's distribution and `total` `(P, p)` their summed
    effects (motion included): the prior p(h | site) and the conditional mean/covariance of the effects
    given h come from it. `gram`: total^T total `(p, p)`, if already computed.
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
    base = site.spec.global_signal * model.global_signal
    sums = np.stack([total[group == h].sum(0) for h in labels])
    means = base + sums / np.maximum(counts, 1)[:, None]
    # within-hypothesis scatter: sum of total total^T minus each hypothesis' n_h mean_h mean_h^T
    scatter = (gram if gram is not None else total.T @ total) - (sums.T / np.maximum(counts, 1)) @ sums
    cov = site.subject_cov + scatter / max(len(pool) - len(labels), 1)
    proj = model.design_pinv  # the oracle's coordinates: the change from the site's Psi
    with np.errstate(divide="ignore"):
        log_prior = np.log(counts / counts.sum())
    return Hypotheses(means=means @ proj.T, cov=proj @ cov @ proj.T, log_prior=log_prior, values=hyp_values)


def oracle_scores(draws: list[_SiteDraw], fit: LaplaceFit, model: EffectModel, config: SimulationConfig,
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
        total_effects = pooled_effects(pool, sample_motion(pool, draw.site.spec, rng), model)
        gram = total_effects.T @ total_effects
        for key in keys:
            attr = registry[key]
            classes = list(attr.classes) if attr.kind == "categorical" else [0.0, 1.0]
            hyp = build_hypotheses(key, attr.kind, classes, pool, total_effects, draw.site, model, gram=gram)
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


def planted_truth(model: EffectModel, effects: dict[str, Effect], atlas: Atlas) -> dict:
    """The planted effects as data: per attribute its code, components (readable) and edge maps.

    Returns {"attributes": {key: {"code", "separability" {component: d'}, "roi" [{region, roi, targets,
    weight, amplitude}], "blocks" [[a, b, weight, amplitude]], "whole_brain" {term: weight}}}, "edge_maps":
    {key: {component: `(E,)` float32 covariance change per unit code on the upper-triangle edges i < j}}}.
    """
    iu = np.triu_indices(atlas.num_rois, 1)
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(model.rows, model.cols))}
    readable, maps = {}, {}
    for key, comps in model.directions.items():
        eff = effects[key]
        entry = {"code": ({"level": eff.level} if eff.level is not None else {"center": eff.center, "scale": eff.scale}),
                 "separability": eff.separabilities}
        if "roi" in comps:
            entry["roi"] = [{"region": r.region, "roi": int(np.argmax(model.basis[:, model.region_columns[r.region]])),
                             "targets": list(r.targets), "weight": r.weight,
                             "amplitude": [float(comps["roi"][index[(YEO7.index(t), model.region_columns[r.region])]])
                                           for t in r.targets]} for r in eff.regions]
        if "blocks" in comps:
            entry["blocks"] = [[a, b, w, float(comps["blocks"][index[tuple(sorted((YEO7.index(a), YEO7.index(b))))]])]
                               for a, b, w in eff.pairs]
        if "whole_brain" in comps:
            entry["whole_brain"] = dict(eff.whole_brain)
        readable[key] = entry
        maps[key] = {c: model.edge_map(v)[iu].astype(np.float32) for c, v in comps.items()}
    return {"attributes": readable, "edge_maps": maps, "atlas": atlas.name, "num_rois": atlas.num_rois}


def _reference_model(config: SimulationConfig) -> tuple[Atlas, np.ndarray, dict[str, np.ndarray], EffectModel]:
    """(atlas, Yeo-7 assignment, HCP templates per group, effect model) of a configuration."""
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
    model, _ = effect_model(atlas, net, (psi_ref + psi_ref.T) / 2, config)
    return atlas, net, templates, model


def planted_effects(config: SimulationConfig = SimulationConfig()) -> dict:
    """The planted truth (`planted_truth`) of a configuration's atlas and effects, without simulating subjects."""
    atlas, _, _, model = _reference_model(config)
    return planted_truth(model, config.effects.effects, atlas)


def _simulate(config: SimulationConfig) -> SubjectTable:
    """Simulate `config.subjects` subjects; returns a `SubjectTable` whose `info` holds the ground truth.

    info keys: ``effect_maps`` {attribute: `(N, N)` float32 covariance change per unit code},
    ``planted_pairs`` {attribute: [(network, network, weight)]}, ``planted`` (`planted_truth`: the
    components per attribute, readable and as edge maps), ``effect_codes`` {attribute: coding},
    ``true_attributes`` (frame, no missing values), ``motion`` `(S,)`, ``oracle_scores`` {attribute:
    array}, ``zero_shot_datasets`` / ``seen_datasets``, ``sites`` (per-site parameters), ``psd_clips``,
    ``timings`` (seconds), ``config``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if config.subjects < 1:
        raise ValueError(f"Need at least one subject, got subjects={config.subjects}.")
    atlas, net, templates, model = _reference_model(config)

    rng = np.random.default_rng(config.seed)
    draws: list[_SiteDraw] = []
    clips = 0
    for cohort, n_cohort in zip(config.cohorts, _allocate(config.subjects, [c.weight for c in config.cohorts])):
        for spec, n_site in zip(cohort.sites, _allocate(n_cohort, [1.0] * len(cohort.sites))):
            site = build_site(cohort, spec, templates[cohort.template], atlas.coords, net, config, rng, model)
            if n_site == 0:
                continue
            draw, clipped = _simulate_site(site, n_site, model, config, rng)
            draws.append(draw)
            clips += clipped
    timings["sample"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    g1 = np.concatenate([d.g1 for d in draws])
    psi_site = np.concatenate([np.broadcast_to(d.site.psi, (len(d.true),) + d.site.psi.shape) for d in draws])
    timepoints = np.concatenate([np.full(len(d.true), d.site.spec.effective_timepoints) for d in draws])
    fit = laplace_fit(g1, psi_site, config.idiosyncrasy, atlas.num_rois + 1 + config.idiosyncrasy, timepoints,
                      active=(model.rows, model.cols), design=model.design)
    scores = oracle_scores(draws, fit, model, config, rng)
    timings["oracle"] = time.perf_counter() - t1

    meta = pd.concat([
        pd.DataFrame({"subject_id": [f"{d.site.spec.name}_{i:05d}" for i in range(len(d.true))],
                      "dataset": d.site.cohort.name, "site": d.site.spec.name, "atlas": atlas.name})
        .join(d.observed.reset_index(drop=True)) for d in draws], ignore_index=True)
    effects = config.effects.effects
    info = {
        "source": "simulator",
        "config": {k: v for k, v in asdict(config).items() if k not in ("cohorts", "effects")},
        "effect_maps": {k: model.edge_map(model.total(k)).astype(np.float32) for k in model.directions},
        "planted_pairs": {k: list(effects[k].pairs) for k in model.directions},
        "planted": planted_truth(model, effects, atlas),
        "effect_codes": {k: ({"level": e.level} if e.level is not None else {"center": e.center, "scale": e.scale})
                         for k, e in effects.items()},
        "true_attributes": pd.concat([d.true for d in draws], ignore_index=True),
        "motion": np.concatenate([d.motion for d in draws]),
        "oracle_scores": scores,
        "zero_shot_datasets": [c.name for c in config.cohorts if c.zero_shot],
        "seen_datasets": [c.name for c in config.cohorts if not c.zero_shot],
        "sites": {d.site.spec.name: {**asdict(d.site.spec), "effective_timepoints": d.site.spec.effective_timepoints,
                                     "dataset": d.site.cohort.name, "template": d.site.cohort.template} for d in draws},
        "psd_clips": clips,
        "timings": timings,
    }
    timings["total"] = time.perf_counter() - t0
    series = [ts for d in draws for ts in d.series] if config.keep_timeseries else None
    return SubjectTable(np.concatenate([d.fcns for d in draws]), meta, info, series)
