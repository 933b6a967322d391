"""Rendering of phantom chest radiographs: seeded anatomy, finding placement and drawing.

Used by ``cxbench.data.phantom``, which turns these pieces into cases and data sets. The side
convention is the same: "left"/"right" are the patient's sides (patient left = image right).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

SIGN = {"right": -1.0, "left": 1.0}  # patient right lies on the image's left
ZONES = ("upper", "middle", "lower")
LUNG_ZONE_LABELS = ("nodule", "mass", "pneumonia", "consolidation", "infiltration", "atelectasis")
SIDE_CHOICES: dict[str, tuple[str, ...]] = {
    **{lab: ("right", "left") for lab in LUNG_ZONE_LABELS + ("pneumothorax", "pleural thickening")},
    "pleural effusion": ("right", "left", "right", "left", "bilateral"),
    "edema": ("bilateral",),
    "emphysema": ("bilateral",),
    "fibrosis": ("bilateral",),
    "cardiomegaly": ("midline",),
    "hernia": ("midline",),
}
ZONE_CHOICES: dict[str, tuple[str | None, ...]] = {
    "nodule": ZONES,
    "mass": ("upper", "middle", "middle", "lower"),
    "pneumonia": ("upper", "middle", "lower", "lower"),
    "consolidation": ZONES,
    "infiltration": ZONES,
    "atelectasis": ("middle", "lower"),
    "pleural thickening": ("upper", "middle", "middle", "lower"),
    "pleural effusion": ("lower",),
    "pneumothorax": ("upper",),
    "edema": ("middle",),
    "fibrosis": ("lower", "lower", "upper"),
    "emphysema": (None,),
    "cardiomegaly": (None,),
    "hernia": (None,),
}
# severity 1..3 -> geometry (normalised units unless noted)
NODULE_R = (0.014, 0.021, 0.030)
MASS_R = (0.042, 0.057, 0.074)
PNEUMONIA_R = (0.050, 0.070, 0.095)
INFILTRATE_R = (0.055, 0.075, 0.095)
INFILTRATE_N = (6, 10, 16)
CONSOLIDATION_FRAC = (0.45, 0.72, 1.0)
ATELECTASIS_H = (0.011, 0.018, 0.027)
EDEMA_SIGMA = (0.075, 0.11, 0.15)
FIBROSIS_EXTENT = (0.18, 0.26, 0.35)
THICKENING_W = (0.014, 0.022, 0.032)
EFFUSION_LEVEL = (0.02, -0.05, -0.13)
PTX_SCALE = (0.86, 0.74, 0.62)
CARDIO_RATIO = (0.54, 0.61, 0.68)
HERNIA_R = (0.035, 0.050, 0.065)
CHANGE_P = {"new": 0.16, "worsened": 0.28, "improved": 0.28, "stable": 0.28}


# ----------------------------------------------------------------------------- anatomy
def _sample_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    dy = rng.uniform(-0.02, 0.02)
    ya = 0.13 + dy + rng.uniform(-0.01, 0.01)
    yd_r = rng.uniform(0.70, 0.75) + dy
    an = {
        "cx": 0.5 + rng.uniform(-0.02, 0.02),
        "W": rng.uniform(0.34, 0.39),
        "m": rng.uniform(0.055, 0.07),
        "ya": ya,
        "yc": ya + rng.uniform(0.30, 0.36),
        "yd": {"right": float(yd_r), "left": float(yd_r + rng.uniform(0.01, 0.03))},
        "cp": rng.uniform(0.06, 0.08),
        "ratio": rng.uniform(0.40, 0.46),
        "hh": rng.uniform(0.12, 0.14),
        "tissue": rng.uniform(0.50, 0.56),
        "air": rng.uniform(0.30, 0.36),
        "soft": rng.uniform(0.06, 0.09),
        "rib_sp": rng.uniform(0.052, 0.060),
        "rib_ph": rng.uniform(0.0, 0.3),
        "rib_curve": rng.uniform(0.16, 0.22),
        "clav": ya + rng.uniform(0.03, 0.06),
        "tex": int(rng.integers(2**31)),
    }
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in an.items()}


@lru_cache(maxsize=8)
def _axes(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    return c[None, :], c[:, None]


def _soft(sdf: Any, e: float) -> Any:
    """Anti-aliased inside mask (1 inside) from a signed distance."""
    return np.clip(0.5 - sdf / e, 0.0, 1.0)


def _waves(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n: int, fmin: float, fmax: float) -> Any:
    """Smooth random texture in about [-1, 1]: a sum of ``n`` plane waves (separable, fast)."""
    th, f, ph = rng.uniform(0, np.pi, n), rng.uniform(fmin, fmax, n), rng.uniform(0, 2 * np.pi, n)
    out = 0.0
    for i in range(n):
        kx, ky = 2 * math.pi * float(f[i]) * math.cos(th[i]), 2 * math.pi * float(f[i]) * math.sin(th[i])
        ay, by = ky * y + float(ph[i]), kx * x
        out = out + np.cos(by) * np.cos(ay) - np.sin(by) * np.sin(ay)
    return out * np.float32(math.sqrt(2.0 / n))


def _mods(an: dict[str, Any], states: list[tuple[dict, int]]) -> dict[str, Any]:
    """Anatomy changes caused by findings (heart size, lung volume, collapse...)."""
    m: dict[str, Any] = {"w": {"right": 1.0, "left": 1.0}, "dome": {"right": 0.0, "left": 0.0}}
    m.update(apex=0.0, flat=1.0, ratio=an["ratio"], collapse={}, marks=1.0, lucent=1.0)
    for f, sev in states:
        lab, side = f["label"], f["side"]
        if lab == "cardiomegaly":
            m["ratio"] = CARDIO_RATIO[sev - 1]
        elif lab == "emphysema":
            for s in SIGN:
                m["w"][s] *= 1 + 0.035 * sev
                m["dome"][s] += 0.03 * sev
            m["apex"] += 0.012 * sev
            m["flat"] *= 1 - 0.28 * sev
            m["marks"] *= 1 - 0.25 * sev
            m["lucent"] *= 1 + 0.10 * sev
        elif lab == "atelectasis":
            m["dome"][side] -= 0.016 * sev
            m["w"][side] *= 1 - 0.015 * sev
        elif lab == "fibrosis" and f["zone"] == "lower":
            for s in SIGN:
                m["dome"][s] -= 0.008 * sev
        elif lab == "pneumothorax":
            m["collapse"][side] = PTX_SCALE[sev - 1]
    if any(f["label"] == "emphysema" for f, _ in states):
        sev = max(s for f, s in states if f["label"] == "emphysema")
        m["ratio"] *= 1 - 0.06 * sev
    return m


def _lung_geom(an: dict[str, Any], mods: dict[str, Any] | None, side: str) -> tuple[float, ...]:
    mods = mods or {"w": {side: 1.0}, "dome": {side: 0.0}, "apex": 0.0, "flat": 1.0}
    w = an["W"] * mods["w"][side]
    m, ya = an["m"], an["ya"] - mods["apex"]
    return w, m, ya, an["yc"], an["yd"][side] + mods["dome"][side], an["cp"] * mods["flat"]


def _lung_sdf(geom: tuple[float, ...], t: Any, y: Any) -> Any:
    """Signed distance-like field of one lung in (lateral t, vertical y) coordinates."""
    w, m, ya, yc, yd, depth = geom
    tc, aw, ah = (m + w) / 2, (w - m) / 2, yc - ya
    v = np.minimum(y - yc, 0.0) / ah
    u = (t - tc) / aw
    d_env = (np.sqrt(u * u + v * v) - 1.0) * aw
    tp = tc - 0.2 * aw
    dia = yd + depth * ((t - tp) / (w - tp)) ** 2
    return np.maximum(d_env, y - dia)


def _zone_bounds(an: dict[str, Any], side: str) -> list[float]:
    ya, yd = an["ya"], an["yd"][side]
    return [ya + (yd - ya) * k / 3 for k in range(4)]


def _heart_ext(an: dict[str, Any], ratio: float) -> tuple[float, float, float]:
    """(right extent, left extent, top y) of the heart, distances from the midline."""
    width = ratio * 2 * an["W"]
    ydm = (an["yd"]["right"] + an["yd"]["left"]) / 2
    return 0.36 * width, 0.64 * width, ydm - 2.0 * an["hh"]


# ----------------------------------------------------------------------------- placement
def _slots(label: str, side: str, zone: str | None) -> set:
    both = ("right", "left")
    if label in LUNG_ZONE_LABELS:
        return {(side, zone)}
    if label == "pleural effusion":
        return {(s, x) for s in (both if side == "bilateral" else (side,)) for x in ("lower", "pleura")}
    if label == "pneumothorax":
        return {(side, x) for x in ZONES + ("pleura",)}
    if label == "pleural thickening":
        return {(side, zone), (side, "pleura")}
    if label == "edema":
        return {("right", "middle"), ("left", "middle"), "global"}
    if label == "fibrosis":
        return {("right", zone), ("left", zone), "global"}
    return {"global"} if label == "emphysema" else {"heart"}


def _region(label: str, side: str, zone: str | None) -> str:
    if label in LUNG_ZONE_LABELS:
        return f"{side} {zone} lung zone"
    return {
        "pleural effusion": "bilateral costophrenic angles"
        if side == "bilateral"
        else f"{side} costophrenic angle",
        "pneumothorax": f"{side} hemithorax",
        "pleural thickening": f"{side} lateral chest wall",
        "edema": "bilateral perihilar regions",
        "emphysema": "both lungs",
        "fibrosis": f"bilateral {zone} lung zones",
        "cardiomegaly": "cardiac silhouette",
        "hernia": "retrocardiac region",
    }[label]


_POINT_MARGIN = {"nodule": 0.045, "mass": 0.075, "pneumonia": 0.05, "infiltration": 0.05, "atelectasis": 0.03}


def _geo(rng: np.random.Generator, an: dict, label: str, side: str, zone: str | None, big_heart: bool):
    """Severity-independent placement of one finding, or None if it does not fit."""
    if label in _POINT_MARGIN:
        margin = _POINT_MARGIN[label]
        z = _zone_bounds(an, side)[ZONES.index(zone) : ZONES.index(zone) + 2]
        hr, hl, top = _heart_ext(an, CARDIO_RATIO[2] if big_heart else an["ratio"] + 0.02)
        geom = _lung_geom(an, None, side)
        for _ in range(30):
            t, y = rng.uniform(an["m"], an["W"]), rng.uniform(z[0] + 0.01, z[1] - 0.01)
            if _lung_sdf(geom, t, y) > -margin:
                continue
            if y > top - margin and t < (hl if side == "left" else hr) + margin:
                continue
            return {"t": t, "y": y, "slope": rng.uniform(-0.2, 0.15)}
        return None
    if label == "hernia":
        dx, dy, level = rng.uniform([0.0, 0.035, 0.35], [0.035, 0.06, 0.5])
        return {"dx": dx, "dy": dy, "level": level}
    if label == "pleural effusion":
        return {"men": rng.uniform(0.04, 0.06)}
    if label == "fibrosis":
        return {"angle": rng.uniform(0, np.pi)}
    if label == "emphysema":
        return {"bulla_side": str(rng.choice(["right", "left"])), "bulla_t": rng.uniform(0.45, 0.65)}
    return {}


def _place(rng: np.random.Generator, an: dict, label: str, claimed: set, big_heart: bool) -> dict | None:
    for _ in range(40):
        side = str(rng.choice(SIDE_CHOICES[label]))
        zone = ZONE_CHOICES[label][int(rng.integers(len(ZONE_CHOICES[label])))]
        slots = _slots(label, side, zone)
        if slots & claimed:
            continue
        geo = _geo(rng, an, label, side, zone, big_heart)
        if geo is None:
            continue
        geo = {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in geo.items()}
        claimed |= slots
        region, tex = _region(label, side, zone), int(rng.integers(2**31))
        return {"label": label, "side": side, "zone": zone, "region": region, "geo": geo, "tex": tex}
    return None


# ----------------------------------------------------------------------------- rendering
class _Ctx:
    """Per-image rendering state: coordinate axes, lung masks, heart mask, anatomy."""

    def __init__(self, an: dict, mods: dict, size: int, shift: tuple[float, float]):
        x, y = _axes(size)
        self.an, self.mods, self.size, self.e = an, mods, size, 1.2 / size
        self.x, self.y = x - np.float32(shift[0]), y - np.float32(shift[1])
        self.t = {s: SIGN[s] * (self.x - an["cx"]) for s in SIGN}
        self.geom = {s: _lung_geom(an, mods, s) for s in SIGN}
        self.air = an["air"] * mods["lucent"]
        self.win, self.L = {}, {}
        for s in SIGN:
            w, m, ya, _, yd, depth = self.geom[s]
            xa, xb = sorted((self.xy(s, m - 0.01), self.xy(s, w + 0.01)))
            sy, sx = self.win[s] = self.window(xa, ya - 0.01, xb, yd + depth + 0.01)
            self.L[s] = np.zeros((size, size), np.float32)
            self.L[s][sy, sx] = _soft(_lung_sdf(self.geom[s], self.t[s][:, sx], self.y[sy]), self.e)

    def xy(self, side: str, t: float) -> float:
        return self.an["cx"] + SIGN[side] * t

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        """Pixel slices (rows, columns) covering the normalised rectangle."""
        xs, ys = self.x[0], self.y[:, 0]
        ix = np.nonzero((xs >= x0) & (xs <= x1))[0]
        iy = np.nonzero((ys >= y0) & (ys <= y1))[0]
        if len(ix) == 0 or len(iy) == 0:
            return slice(0, 0), slice(0, 0)
        return slice(iy[0], iy[-1] + 1), slice(ix[0], ix[-1] + 1)


def _anatomy(c: _Ctx, rng_tex: np.random.Generator) -> np.ndarray:
    """Density of the normal (finding-modified) anatomy; also sets ``c.heart``/``c.avail``."""
    an, x, y, e, mods = c.an, c.x, c.y, c.e, c.mods
    cx, ax, ya, wall = an["cx"], np.abs(c.x - an["cx"]), an["ya"], an["W"] + an["soft"]
    ramp = np.clip((y - ya + 0.14) / 0.12, 0, 1)
    bw = 0.10 + (wall + 0.06 - 0.10) * ramp * ramp * (3 - 2 * ramp)
    body = _soft(ax - bw, 3 * e)
    d = 0.02 + body * (an["tissue"] - 0.12 * np.clip((ax - wall) / 0.06, 0, 1))
    sy, _ = c.window(0, ya - 0.09, 1, ya + 0.07)  # humeral heads and clavicles
    axw, yw = ax, y[sy]
    hum = np.sqrt((axw - wall - 0.05) ** 2 + (yw - ya + 0.01) ** 2)
    yc_ = an["clav"] + 0.03 - 0.10 * axw + 0.05 * axw * axw
    clav = _soft(np.abs(yw - yc_) - 0.013, 1.5 * e) * _soft(0.035 - axw, e) * _soft(axw - wall - 0.03, 4 * e)
    d[sy] += (
        0.1 * _soft(hum - 0.065, 2 * e) * (1 + 0.5 * np.exp(-(((hum - 0.06) / 0.008) ** 2))) + 0.13 * clav
    )
    # heart: a tilted ellipse whose apex points to the patient's left and down
    width = mods["ratio"] * 2 * an["W"]
    hb, th = an["hh"] * (1 + 0.6 * (mods["ratio"] - 0.43)), 0.45
    a = math.sqrt(max((width / 2) ** 2 - (hb * math.sin(th)) ** 2, 1e-4)) / math.cos(th)
    ydm = (an["yd"]["right"] + an["yd"]["left"]) / 2
    ext = math.sqrt((a * math.sin(th)) ** 2 + (hb * math.cos(th)) ** 2)
    hy = ydm + 0.03 - ext
    cover = np.zeros_like(d)
    sy, sx = c.window(cx - 0.4 * width, hy - ext - 0.01, cx + 0.7 * width, hy + ext + 0.01)
    u, v = x[:, sx] - (cx + 0.14 * width), y[sy] - hy
    ur, vr = u * math.cos(th) + v * math.sin(th), -u * math.sin(th) + v * math.cos(th)
    cover[sy, sx] = _soft((np.sqrt((ur / a) ** 2 + (vr / hb) ** 2) - 1) * min(a, hb), e)
    c.heart = cover * (y < ydm + 0.015)
    sy, sx = c.window(cx - 0.1, ya + 0.1, cx + 0.15, ydm)  # aortic knob and vascular pedicle
    ky = y[sy] - ya - 0.15
    knob = _soft(np.sqrt((x[:, sx] - cx - an["m"] - 0.005) ** 2 + ky * ky) - 0.03, e)
    pedicle = _soft(ax[:, sx] - an["m"] - 0.012 * np.clip(ky / 0.1, 0, 1), e) * (ky > -0.03)
    cover[sy, sx] = np.maximum(cover[sy, sx], np.maximum(knob, pedicle))
    c.avail = {}
    warp = 2.5 * _waves(rng_tex, x, y, 4, 1.0, 3.0)
    for s in SIGN:
        sy, sx = c.win[s]
        t, yw, L, cov = c.t[s][:, sx], y[sy], c.L[s][sy, sx], cover[sy, sx]
        scale = mods["collapse"].get(s, 1.0)
        if scale < 1.0:  # pneumothorax: the lung collapses towards its lower medial corner
            ta, yA = an["m"] + 0.03, an["yd"][s]
            sdf = _lung_sdf(c.geom[s], ta + (t - ta) / scale, yA + (yw - yA) / scale) * scale
            lc = _soft(sdf, e) * L
            c.rim = np.zeros_like(d)
            c.rim[sy, sx] = L - lc
        else:
            lc = L
        c.avail[s] = c.L[s] * (1 - 0.85 * cover)
        dt, dy = t - an["m"] - 0.04, yw - ya - 0.42 * (an["yd"][s] - ya)
        r = np.sqrt(dt * dt + dy * dy)
        ang = dy / (np.abs(dt) + np.abs(dy) + 1e-3)  # cheap monotonic stand-in for the ray angle
        wp = warp[sy, sx]
        ves = 0.5 + 0.5 * np.cos(27 * ang + wp + 30 * r)
        ves = ves * ves
        ves = ves * ves * (0.6 + 0.4 * np.cos(11 * ang - wp + 55 * r))
        marks = ves * np.exp(-r / 0.2) * np.clip(r / 0.04, 0, 1) + 0.8 * np.exp(
            -(dt * dt) / 6e-4 - (dy * dy) / 3e-3
        )
        dw = -c.air * (lc * (1.0 - 0.8 * (1 - scale)) + 1.25 * (L - lc)) * (1 - 0.85 * cov)
        dw += 0.065 * mods["marks"] * marks * lc * (1 - cov)
        if scale < 1.0:
            dw += 0.07 * 4 * lc * (1 - lc) * L
        d[sy, sx] += dw
    # spine, trachea, ribs, gastric bubble
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (y - an["rib_ph"]) / 0.045)
    d += (0.05 + 0.03 * vert) * _soft(ax - 0.028, 2 * e) * body
    sy, sx = c.window(cx - 0.03, 0, cx + 0.03, ya + 0.2)
    d[sy, sx] -= (
        0.10 * _soft(ax[:, sx] - 0.012, e) * np.clip((ya + 0.17 - y[sy]) / 0.03, 0, 1) * (y[sy] > 0.02)
    )
    sy, sx = c.window(cx - an["W"] - 0.03, ya - 0.05, cx + an["W"] + 0.03, ydm + 0.04)
    axw, yw = ax[:, sx], y[sy]
    tn = axw / an["W"]
    yy = yw - ya + 0.04 - an["rib_curve"] * tn * tn + 0.07 * tn
    k = yy / (an["rib_sp"] * (1 + 0.9 * np.maximum(yy, 0))) + an["rib_ph"]
    p = (k - np.floor(k)) / 0.4
    rib = np.clip(2.5 * np.sin(np.pi * np.minimum(p, 1)), 0, 1) * (p < 1) * (yy > 0)
    inside = _soft(0.03 - axw, e) * _soft(axw - an["W"] - 0.02, 2 * e)
    d[sy, sx] += 0.08 * rib * inside * (0.4 + 0.6 * (c.L["right"][sy, sx] + c.L["left"][sy, sx]))
    sy, sx = c.window(cx + 0.1, an["yd"]["left"], cx + 0.24, an["yd"]["left"] + 0.11)
    gx, gy = (x[:, sx] - cx - 0.17) / 0.045, (y[sy] - an["yd"]["left"] - 0.055) / 0.025
    d[sy, sx] -= 0.12 * _soft(np.sqrt(gx * gx + gy * gy) - 1, 0.05)
    return d


def _draw(c: _Ctx, f: dict, sev: int) -> tuple[np.ndarray | float, np.ndarray]:
    """Density added by one finding and the map its box is taken from."""
    lab, side, g, an, x, y, e = f["label"], f["side"], f["geo"], c.an, c.x, c.y, c.e
    trng = np.random.default_rng(f["tex"])
    out = np.zeros((c.size, c.size), np.float32)
    if lab in ("nodule", "mass", "pneumonia", "infiltration"):
        x0, y0 = c.xy(side, g["t"]), g["y"]
        R = {"nodule": NODULE_R, "mass": MASS_R, "pneumonia": PNEUMONIA_R, "infiltration": INFILTRATE_R}[lab]
        r = R[sev - 1]
        sy, sx = c.window(x0 - r - 0.07, y0 - r - 0.07, x0 + r + 0.07, y0 + r + 0.07)
        xw, yw, L = x[:, sx], y[sy, :], c.avail[side][sy, sx]
        dx, dy = xw - x0, yw - y0
        rr = np.sqrt(dx * dx + dy * dy)
        if lab in ("nodule", "mass"):
            ang = np.arctan2(dy, dx)
            lobes = 1 + 0.12 * np.sin(3 * ang + g["slope"] * 9) + 0.06 * np.sin(5 * ang + 1)
            lobes = lobes if lab == "mass" else 1
            disc = _soft(rr - r * lobes, 1.5 * e)
            val = disc * (0.85 + 0.15 * np.clip(1 - (rr / r) ** 2, 0, 1)) * (0.24 + 0.03 * sev)
        elif lab == "pneumonia":
            q = np.sqrt((dx / r) ** 2 + (dy / (0.8 * r)) ** 2) * (1 + 0.15 * _waves(trng, xw, yw, 4, 3, 6))
            mottle = np.clip(0.5 + 0.7 * _waves(trng, xw, yw, 8, 22, 40), 0, 1)
            val = c.air * L * np.clip((1 - q) / 0.35, 0, 1) * (0.3 + 0.5 * mottle) * (0.75 + 0.1 * sev)
        else:
            n = INFILTRATE_N[-1]
            pr, pa = (np.sqrt(trng.uniform(0, 1, n)) * r).tolist(), trng.uniform(0, 2 * np.pi, n).tolist()
            ln, wd = trng.uniform(0.025, 0.05, n).tolist(), trng.uniform(0.0045, 0.007, n).tolist()
            jit = trng.normal(0, 0.45, n).tolist()
            streak = 0.0
            for i in range(INFILTRATE_N[sev - 1]):
                px, py = x0 + pr[i] * math.cos(pa[i]), y0 + pr[i] * math.sin(pa[i])
                o = math.atan2(py - 0.45, SIGN[side] * (px - an["cx"]) - an["m"]) + jit[i]
                co, so = SIGN[side] * math.cos(o), math.sin(o)
                al, ac = (xw - px) * co + (yw - py) * so, -(xw - px) * so + (yw - py) * co
                streak = streak + np.exp(-((al / ln[i]) ** 2) - (ac / wd[i]) ** 2)
            haze = np.exp(-(rr * rr) / (r * r))
            val = c.air * L * (0.1 * haze + 0.6 * np.minimum(streak, 1)) * (0.8 + 0.1 * sev)
        out[sy, sx] = val
        return out, out
    t, L = c.t.get(side), c.avail.get(side)
    if lab == "consolidation":
        z0, z1 = _zone_bounds(an, side)[ZONES.index(f["zone"]) : ZONES.index(f["zone"]) + 2]
        w, m = c.geom[side][0], an["m"]
        band = _soft(z0 - y, e) * _soft(y - z1 - (0.04 if f["zone"] == "lower" else 0), 0.02)
        lat = _soft(m + (w - m) * (1 - CONSOLIDATION_FRAC[sev - 1]) - t, 0.015)
        dx, dy = t - an["m"] - 0.04, y - (z0 + z1) / 2
        ang = dy / (np.abs(dx) + np.abs(dy) + 1e-3)
        bron = np.clip((np.cos(16 * ang + 3 * _waves(trng, x, y, 3, 1, 3)) - 0.9) * 10, 0, 1)
        out = c.air * L * band * lat * (0.5 + 0.12 * sev) * (1 - 0.35 * bron)
        return out, out
    if lab == "atelectasis":
        w, m = c.geom[side][0], an["m"]
        yc_ = g["y"] + g["slope"] * (t - (m + w) / 2)
        h = ATELECTASIS_H[sev - 1] * (0.5 + np.clip((t - m) / (w - m), 0, 1.2))
        out = c.air * L * _soft(np.abs(y - yc_) - h, 1.5 * e) * np.clip((t - m - 0.05) / 0.02, 0, 1) * 0.85
        return out, out
    if lab == "pleural effusion":
        for s in ("right", "left") if side == "bilateral" else (side,):
            w, m, _, _, yd, _ = c.geom[s]
            level = yd + EFFUSION_LEVEL[sev - 1] - g["men"] * np.clip((c.t[s] - m) / (w - m), 0, 1) ** 2
            out = out + c.avail[s] * np.clip((y - level) / 0.012, 0, 1) * (c.air * 0.97 + 0.03)
        return out, out
    if lab == "pleural thickening":
        w, m, ya, yc, _, _ = c.geom[side]
        tc, aw = (m + w) / 2, (w - m) / 2
        tlat = tc + aw * np.sqrt(np.clip(1 - (np.minimum(y - yc, 0) / (yc - ya)) ** 2, 0, 1))
        z0, z1 = _zone_bounds(an, side)[ZONES.index(f["zone"]) : ZONES.index(f["zone"]) + 2]
        wid = THICKENING_W[sev - 1] * (1 + 0.3 * _waves(trng, x, y, 3, 2, 5))
        band = L * _soft(tlat - wid - t, e) * _soft(z0 - y, 0.015) * _soft(y - z1, 0.015)
        out = band * (c.air + 0.08)
        return out, out
    if lab == "edema":
        tex = 1 + 0.25 * _waves(trng, x, y, 10, 5, 12)
        sx = EDEMA_SIGMA[sev - 1]
        for s in SIGN:
            yh = an["ya"] + 0.45 * (an["yd"][s] - an["ya"])
            q = ((c.t[s] - an["m"] - 0.04) / sx) ** 2 + ((y - yh) / (1.4 * sx)) ** 2
            out = out + c.air * c.avail[s] * np.exp(-q) * tex * (0.35 + 0.15 * sev)
        return out, out
    if lab == "fibrosis":
        ca, sa = math.cos(g["angle"]), math.sin(g["angle"])
        u = x * ca + y * sa + 0.012 * _waves(trng, x, y, 4, 3, 6)
        v = -x * sa + y * ca + 0.012 * _waves(trng, x, y, 4, 3, 6)
        net = np.minimum(
            np.exp(-(np.sin(np.pi * 26 * u) ** 2) / 0.05) + np.exp(-(np.sin(np.pi * 26 * v) ** 2) / 0.05), 1
        )
        for s in SIGN:
            w, m, ya, _, yd, _ = c.geom[s]
            ext = FIBROSIS_EXTENT[sev - 1] * (an["yd"][s] - an["ya"])
            zone = (
                np.clip((y - (yd - ext)) / 0.03, 0, 1)
                if f["zone"] == "lower"
                else np.clip((ya + ext - y) / 0.03, 0, 1)
            )
            per = np.clip((c.t[s] - m) / (w - m), 0, 1) ** 0.7
            out = out + c.air * c.avail[s] * zone * per * (0.2 + 0.8 * net) * (0.75 + 0.15 * sev)
        return out, out
    if lab == "hernia":
        ydm = (an["yd"]["right"] + an["yd"]["left"]) / 2
        r, hx, hy = HERNIA_R[sev - 1], an["cx"] + g["dx"], ydm - g["dy"]
        rr = np.sqrt((x - hx) ** 2 + (y - hy) ** 2)
        circ = _soft(rr - r, e)
        gas = circ * _soft(y - (hy - r + 2 * r * g["level"]), e)
        out = -0.22 * gas + 0.06 * (circ - gas) + 0.05 * np.exp(-(((rr - r) / (1.5 * e)) ** 2))
        return out, circ
    if lab == "emphysema":
        out = 0.0
        if sev >= 2:
            bs = g["bulla_side"]
            w, m, ya, _, _, _ = c.geom[bs]
            bt, by, br = m + (w - m) * g["bulla_t"], ya + 0.07, 0.02 + 0.01 * sev
            rr = np.sqrt((c.t[bs] - bt) ** 2 + (y - by) ** 2)
            out = c.L[bs] * (-0.06 * _soft(rr - br, e) + 0.04 * np.exp(-(((rr - br) / (1.2 * e)) ** 2)))
        return out, c.L["right"] + c.L["left"]
    if lab == "pneumothorax":
        return 0.0, c.rim
    return 0.0, c.heart  # cardiomegaly: drawn by the anatomy


def _bbox(mask: np.ndarray, size: int) -> list[float]:
    hit = mask >= 0.2 * float(mask.max()) if float(mask.max()) > 0 else mask > 0
    rows, cols = np.nonzero(hit.any(axis=1))[0], np.nonzero(hit.any(axis=0))[0]
    if len(rows) == 0:
        return [0.0, 0.0, 1.0, 1.0]
    box = (cols[0] / size, rows[0] / size, (cols[-1] + 1) / size, (rows[-1] + 1) / size)
    return [round(float(v), 4) for v in box]


def render(
    an: dict[str, Any],
    states: list[tuple[dict, int]],
    size: int,
    rng: np.random.Generator,
    shift: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, list[list[float]]]:
    """Render one study of patient ``an``; ``states`` are (finding, severity) pairs.

    Returns the uint8 image and one box per finding. ``rng`` drives noise and exposure only.
    """
    c = _Ctx(an, _mods(an, states), size, shift)
    d = _anatomy(c, np.random.default_rng(an["tex"]))
    boxes = []
    for f, sev in states:
        add, boxmap = _draw(c, f, sev)
        d = d + add
        boxes.append(_bbox(np.abs(np.asarray(boxmap, np.float32)), size))
    d = d + (rng.random((size, size), dtype=np.float32) - 0.5) * np.float32(0.042)
    lo, hi, gamma, gx, gy = (
        float(v) for v in rng.uniform([0.02, 0.76, 0.85, -0.04, -0.04], [0.07, 0.86, 1.15, 0.04, 0.04])
    )
    grad = 1 + gx * (c.x - 0.5) + gy * (c.y - 0.5)
    idx = (np.clip((d * grad - lo) / (hi - lo), 0, 1) * 4095 + 0.5).astype(np.uint16)
    lut = ((np.arange(4096) / 4095) ** gamma * 255 + 0.5).astype(np.uint8)  # gamma via a lookup table
    return lut[idx], boxes
