"""The embedded default collection: procedurally generated "art-like" images with a known style label, no files.

Each of ``n_styles`` styles is a *distribution* over two families of cues: a palette (hue centres, saturation and
value ranges, each image re-draws its colours from it and then shifts them globally, so colour alone is not a
perfect cue) and brush/texture statistics (stroke orientation distribution, stroke length and width, smearing of
the underlying layout along the strokes, film grain, edge softness). The *content* -- background composition and
the number, type, size and position of objects -- is drawn independently of the style. A model that keys on layout
therefore does poorly, a model invariant to layout but sensitive to texture and palette does well: this makes
style learning measurable without any data on disk. :meth:`SyntheticArt.content` exposes each image's content
(background composition, object count) as labels too, so a representation can be checked for separating style well
and content poorly. Images are rendered on the fly (vectorised numpy, one small
FFT per image, a few ms at 64 px) and are a pure function of ``(seed, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

COMPOSITIONS: tuple[str, ...] = ("gradient", "horizon", "vignette")  # background layouts: the content labels

# Offsets that keep the per-style and per-image random streams disjoint.
_STYLE_STREAM = 7919
_IMAGE_STREAM = 104729


@dataclass(frozen=True)
class StyleSpec:
    """The distribution one style draws its images from (all lengths in pixels at 64 px, scaled with ``size``).

    Attributes:
        hues: ``(K,)`` hue centres in [0, 1) the palette is drawn around.
        hue_spread: std of a colour's hue around its centre.
        sat: (mean, std) of palette saturation.
        val: (mean, std) of palette value (brightness).
        orient: mean stroke orientation in radians (axial, period pi).
        orient_conc: von Mises concentration of stroke orientations (0 = isotropic strokes).
        stroke_len: length scale of a stroke along its direction.
        stroke_width: width of a stroke across its direction.
        stroke_amp: luminance modulation depth of the stroke texture.
        colour_amp: depth of the colour modulation of the stroke texture (between two palette colours).
        smear: length of the directional blur of the layout along the main stroke direction.
        grain: std of the per-pixel film grain.
        edge_soft: softness of object edges (sigmoid scale of the signed distance).
    """

    hues: tuple[float, ...]
    hue_spread: float
    sat: tuple[float, float]
    val: tuple[float, float]
    orient: float
    orient_conc: float
    stroke_len: float
    stroke_width: float
    stroke_amp: float
    colour_amp: float
    smear: float
    grain: float
    edge_soft: float


def make_style(rng: np.random.Generator) -> StyleSpec:
    """Draw one style's parameters."""
    n_hues = int(rng.integers(2, 4))
    return StyleSpec(
        hues=tuple(float(h) for h in rng.random(n_hues)),
        hue_spread=float(rng.uniform(0.02, 0.07)),
        sat=(float(rng.uniform(0.2, 0.85)), float(rng.uniform(0.05, 0.15))),
        val=(float(rng.uniform(0.35, 0.85)), float(rng.uniform(0.08, 0.2))),
        orient=float(rng.uniform(0.0, np.pi)),
        orient_conc=float(rng.choice([0.0, 1.0, 4.0, 12.0])),
        stroke_len=float(rng.uniform(1.0, 7.0)),
        stroke_width=float(rng.uniform(0.8, 3.5)),
        stroke_amp=float(rng.uniform(0.06, 0.25)),
        colour_amp=float(rng.uniform(0.0, 0.35)),
        smear=float(rng.uniform(0.0, 5.0)),
        grain=float(rng.uniform(0.0, 0.07)),
        edge_soft=float(rng.uniform(0.3, 3.0)),
    )


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``(..., 3)`` HSV in [0, 1] -> ``(..., 3)`` RGB in [0, 1] (vectorised colorsys)."""
    h, s, v = hsv[..., 0] % 1.0, np.clip(hsv[..., 1], 0, 1), np.clip(hsv[..., 2], 0, 1)
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _background(palette: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The background draws of one image's content: two palette colours, the composition and its parameters.

    Shared by rendering and :meth:`SyntheticArt.content` so that both consume the image's random stream alike.
    Parameters: gradient ``[angle]``, horizon ``[height, phase]``, vignette ``[centre_y, centre_x]``.
    """
    c0, c1 = palette[rng.choice(len(palette), size=2, replace=False)]
    kind = int(rng.integers(0, 3))
    if kind == 0:
        params = np.array([rng.uniform(0.0, 2 * np.pi)])
    elif kind == 1:
        h = rng.uniform(0.25, 0.75)
        params = np.array([h, rng.uniform(0, 6)])
    else:
        params = rng.uniform(0.2, 0.8, size=2)
    return c0, c1, kind, params


class SyntheticArt:
    """``n`` procedurally generated images in ``n_styles`` balanced styles (image ``i`` has style ``i % n_styles``).

    Args:
        n: number of images.
        size: side of the square images in pixels.
        n_styles: number of style classes (labels ``style_0`` ... ``style_{n_styles-1}``).
        seed: selects both the styles and the images; ``image(i)`` is a pure function of ``(seed, i)``.

    Raises:
        ValueError: for a non-positive ``n``, ``n_styles`` or a ``size`` below 8.
    """

    def __init__(self, n: int, size: int = 64, n_styles: int = 7, seed: int = 0) -> None:
        if n <= 0 or n_styles <= 0:
            raise ValueError(f"n and n_styles must be positive, got n={n}, n_styles={n_styles}")
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}")
        self.n, self.size, self.n_styles, self.seed = n, size, n_styles, seed
        self.styles = [make_style(np.random.default_rng([seed, _STYLE_STREAM, s])) for s in range(n_styles)]
        self.labels: list[str] = [f"style_{i % n_styles}" for i in range(n)]
        s = size
        self._scale = s / 64.0
        coords = (np.arange(s, dtype=np.float32) + 0.5) / s
        self._yy, self._xx = np.meshgrid(coords, coords, indexing="ij")  # (S, S) in (0, 1)
        self._fy = np.fft.fftfreq(s)[:, None].astype(np.float32)  # cycles / pixel, (S, 1)
        self._fx = np.fft.rfftfreq(s)[None, :].astype(np.float32)  # (1, S//2+1)

    def __len__(self) -> int:
        return self.n

    def style_index(self, i: int) -> int:
        """Class index of image ``i``."""
        return i % self.n_styles

    def content(self, i: int) -> tuple[int, int]:
        """``(composition, n_objects)`` of image ``i`` without rendering it: the content, drawn independently of style.

        ``composition`` indexes :data:`COMPOSITIONS` (the background layout); ``n_objects`` is in ``[0, 5]``. These
        are the label-free development signal's *content* labels: a style representation should separate
        ``style_index`` well and these poorly.

        Raises:
            IndexError: when ``i`` is outside ``[0, n)``.
        """
        if not 0 <= i < self.n:
            raise IndexError(f"image index {i} out of range for {self.n} synthetic images")
        rng = np.random.default_rng([self.seed, _IMAGE_STREAM, i])  # the same stream and draw order as array(i)
        palette = self._palette(self.styles[self.style_index(i)], rng)
        _, _, kind, _ = _background(palette, rng)
        return kind, int(rng.integers(0, 6))

    def content_labels(self) -> list[str]:
        """The composition name of every image (``gradient`` | ``horizon`` | ``vignette``), in index order."""
        return [COMPOSITIONS[self.content(i)[0]] for i in range(self.n)]

    def image(self, i: int) -> Image.Image:
        """Render image ``i`` as an RGB PIL image of ``size x size``."""
        return Image.fromarray(self.array(i), mode="RGB")

    def array(self, i: int) -> np.ndarray:
        """Render image ``i`` as a ``(size, size, 3)`` uint8 array.

        Raises:
            IndexError: when ``i`` is outside ``[0, n)``.
        """
        if not 0 <= i < self.n:
            raise IndexError(f"image index {i} out of range for {self.n} synthetic images")
        style = self.styles[self.style_index(i)]
        rng = np.random.default_rng([self.seed, _IMAGE_STREAM, i])
        palette = self._palette(style, rng)
        layout = self._layout(style, palette, rng)
        img = self._brush(style, palette, layout, rng)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    # ------------------------------------------------------------------------------------------ rendering

    def _palette(self, style: StyleSpec, rng: np.random.Generator, k: int = 5) -> np.ndarray:
        """``(k, 3)`` RGB colours: the style's distribution, then a per-image global shift (colour jitter)."""
        centres = np.asarray(style.hues)[rng.integers(0, len(style.hues), size=k)]
        hue = centres + rng.normal(0.0, style.hue_spread, size=k) + rng.normal(0.0, 0.06)
        sat = (rng.normal(style.sat[0], style.sat[1], size=k)) * np.exp(rng.normal(0.0, 0.2))
        val = (rng.normal(style.val[0], style.val[1], size=k)) * np.exp(rng.normal(0.0, 0.15))
        return _hsv_to_rgb(np.stack([hue, np.clip(sat, 0.0, 1.0), np.clip(val, 0.05, 1.0)], axis=-1))

    def _layout(self, style: StyleSpec, palette: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Content: a background composition plus 0-5 objects, independent of the style except for edge softness."""
        yy, xx = self._yy, self._xx
        soft = max(style.edge_soft * self._scale, 0.25) / self.size  # in canvas units
        c0, c1, kind, p = _background(palette, rng)
        if kind == 0:  # linear gradient in a random direction
            t = np.clip((np.cos(p[0]) * (xx - 0.5) + np.sin(p[0]) * (yy - 0.5)) + 0.5, 0.0, 1.0)
        elif kind == 1:  # horizon split (landscape-like)
            t = 1.0 / (1.0 + np.exp(np.clip((p[0] + 0.05 * np.sin(6 * xx + p[1]) - yy) / soft, -30, 30)))
        else:  # radial vignette around a random centre
            t = np.clip(np.hypot(yy - p[0], xx - p[1]) / 0.7, 0.0, 1.0)
        img = c0 * (1.0 - t[..., None]) + c1 * t[..., None]
        for _ in range(int(rng.integers(0, 6))):
            cy, cx = rng.uniform(0.1, 0.9, size=2)
            a, b = rng.uniform(0.05, 0.3, size=2)
            th = rng.uniform(0.0, np.pi)
            u = np.cos(th) * (xx - cx) + np.sin(th) * (yy - cy)
            v = -np.sin(th) * (xx - cx) + np.cos(th) * (yy - cy)
            shape = int(rng.integers(0, 3))
            if shape == 0:  # disc
                sdf = np.hypot(u, v) - a
            elif shape == 1:  # ellipse (approximate signed distance)
                sdf = (np.hypot(u / a, v / b) - 1.0) * min(a, b)
            else:  # rotated rectangle
                sdf = np.maximum(np.abs(u) - a, np.abs(v) - b)
            alpha = 1.0 / (1.0 + np.exp(np.clip(sdf / soft, -30.0, 30.0)))
            img = img * (1.0 - alpha[..., None]) + palette[rng.integers(0, len(palette))] * alpha[..., None]
        return img.astype(np.float32)

    def _brush(self, style: StyleSpec, palette: np.ndarray, layout: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Style texture: smear the layout along the strokes, add oriented stroke texture and grain (one FFT)."""
        s, sc = self.size, self._scale
        fx, fy = self._fx, self._fy
        # Stroke orientations: an axial von Mises around the style's mean (period pi; kappa=0 is isotropic).
        thetas = style.orient + 0.5 * rng.vonmises(0.0, style.orient_conc, size=3) + rng.normal(0.0, 0.1)
        cos, sin = np.cos(thetas)[:, None, None], np.sin(thetas)[:, None, None]
        f_par = fx * cos + fy * sin  # frequency along the stroke direction, (3, S, S//2+1)
        f_perp = -fx * sin + fy * cos
        length = style.stroke_len * sc * np.exp(rng.normal(0.0, 0.15))
        f0 = 1.0 / (2.0 * style.stroke_width * sc * np.exp(rng.normal(0.0, 0.1)))
        band = np.exp(-((np.abs(f_perp) - f0) ** 2) / (2.0 * (0.5 * f0) ** 2))
        stroke_filter = (np.exp(-2.0 * np.pi**2 * length**2 * f_par**2) * band).sum(axis=0)
        smear = np.exp(-2.0 * np.pi**2 * (style.smear * sc) ** 2 * f_par[0] ** 2)

        noise = rng.standard_normal((2, s, s)).astype(np.float32)
        spec = np.fft.rfft2(np.concatenate([layout.transpose(2, 0, 1), noise]), axes=(-2, -1))
        spec[:3] *= smear
        spec[3:] *= stroke_filter
        out = np.fft.irfft2(spec, s=(s, s), axes=(-2, -1)).astype(np.float32)
        img = out[:3].transpose(1, 2, 0)
        tex = out[3:]
        tex = (tex - tex.mean(axis=(1, 2), keepdims=True)) / (tex.std(axis=(1, 2), keepdims=True) + 1e-6)
        ca, cb = palette[rng.choice(len(palette), size=2, replace=False)]
        img = img * (1.0 + style.stroke_amp * tex[0][..., None]) + style.colour_amp * 0.5 * tex[1][..., None] * (
            ca - cb
        )
        img = img + style.grain * rng.standard_normal((s, s, 1)).astype(np.float32)
        return img
