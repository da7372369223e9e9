"""Small polygon helpers for boxes and fracture zones (stored-pixel coordinates)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]


def clip_polygon(points: FloatArray, rect: tuple[float, float, float, float]) -> FloatArray:
    """Sutherland-Hodgman clip of a polygon ``(k, 2)`` to the rectangle ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = rect
    poly = [tuple(p) for p in np.asarray(points, float)]
    edges = (
        (lambda p: p[0] >= x0, lambda a, b: _cross_x(a, b, x0)),
        (lambda p: p[0] <= x1, lambda a, b: _cross_x(a, b, x1)),
        (lambda p: p[1] >= y0, lambda a, b: _cross_y(a, b, y0)),
        (lambda p: p[1] <= y1, lambda a, b: _cross_y(a, b, y1)),
    )
    for inside, cross in edges:
        if not poly:
            break
        out = []
        prev = poly[-1]
        for cur in poly:
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
            prev = cur
        poly = out
    return np.asarray(poly, float).reshape(-1, 2)


def _cross_x(a: tuple[float, ...], b: tuple[float, ...], x: float) -> tuple[float, float]:
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + t * (b[1] - a[1]))


def _cross_y(a: tuple[float, ...], b: tuple[float, ...], y: float) -> tuple[float, float]:
    t = (y - a[1]) / (b[1] - a[1])
    return (a[0] + t * (b[0] - a[0]), y)


def polygon_area(points: FloatArray) -> float:
    """Unsigned shoelace area."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
