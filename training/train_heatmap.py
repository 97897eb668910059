"""Train the tree-centre heatmap network (treecore/models/tree_centres.onnx) on CPU, byte-reproducibly.

The network: a stride-2 3 x 3 stem and three dilated 3 x 3 convolutions (dilations 2, 4, 8) on its half-
resolution grid, 8 channels, ReLU, and a 1 x 1 head with three outputs per grid pixel: a tree-centre logit
(peaks are trees), the crown diameter in working pixels / 10, and a dead-tree logit (grey snags, which the
HSV range cannot see). Trained on the three NEON crops named in training/neon.py (or two of them with
--leave-out), each resampled to working resolutions from 0.2 to 0.6 m per pixel, plus copies with synthetic
grey snags (targets) and fallen logs (no targets) pasted in, and two drawn scenes. Every random choice comes from one
seed, XLA runs on one thread, and the ONNX is written without timestamps: the same seed gives the same bytes.

    make train                                              # all three crops -> treecore/models/
    .venv/bin/python training/train_heatmap.py --check      # retrain, compare with the committed file
    .venv/bin/python training/train_heatmap.py --leave-out SOAP_061 --out benchmarks/data/models/loo_SOAP_061.onnx
    make train TRAIN_ARGS=--check                           # the same through make
"""

from __future__ import annotations

import os

# Before jax is imported: CPU only, one thread, so the float sums (and the ONNX bytes) repeat exactly.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.neon import GSD_M, IMAGES, Site, load_site, short_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "treecore" / "models" / "tree_centres.onnx"
#: sha256 of the committed network (checked by a test and by --check).
DIGEST = ROOT / "training" / "tree_centres.sha256"
#: (dilation, stride) of each 3 x 3 convolution: a stride-2 stem, then dilated layers at half resolution
#: (a quarter of the work per working pixel; receptive field 1 + 2 x (2 + 4 + 8) = 29 working pixels).
LAYERS = ((1, 2), (2, 1), (4, 1), (8, 1))
STRIDE = 2
CHANNELS = 8
#: Working resolutions trained on, metres per pixel: treecore.heatmap runs at 0.2-0.6 m (0.4 m, the one
#: 0.1 m drone tiles run at, twice).
RESOLUTIONS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.4, 0.45, 0.5, 0.6)
CROP = 63  # working pixels: odd, so flips and quarter turns keep the stride-2 grid (outputs at 0, 2, .., 62)
OUT = (CROP + 1) // 2
#: Drawn scenes added to the real crops (see `synthetic_site`).
SYNTHETIC_SCENES = 2
BATCH = 16
#: Input normalisation, the same in treecore.heatmap: (rgb - MEAN) / STD.
MEAN, STD = 127.5, 64.0
SIZE_UNIT_PX = 10.0


def _paste_snags(site: Site, rng: np.random.Generator, count: int) -> Site:
    """A copy of the site with `count` synthetic grey snags (new dead boxes) and a few fallen logs (no boxes).

    A snag: grey-white branches radiating from its trunk, a darker copy offset as its shadow, placed
    where it overlaps no annotated crown.
    """
    image = site.image.copy()
    h, w = image.shape[:2]
    boxes, dead = [site.boxes], [site.dead]
    taken = site.boxes.copy()
    for _ in range(count * 20):
        if sum(len(b) for b in boxes) - len(site.boxes) >= count:
            break
        radius = float(rng.uniform(8, 28))  # 1.6 to 5.6 m crowns at 0.1 m
        cx, cy = float(rng.uniform(radius, w - radius)), float(rng.uniform(radius, h - radius))
        box = np.array([cx - radius, cy - radius, cx + radius, cy + radius])
        overlap = (
            (taken[:, 0] < box[2]) & (taken[:, 2] > box[0]) & (taken[:, 1] < box[3]) & (taken[:, 3] > box[1])
        ).any()
        if overlap:
            continue
        grey = float(rng.uniform(140, 235))
        tint = rng.uniform(-12, 12, 3)
        colour = tuple(float(np.clip(grey + t, 0, 255)) for t in tint)
        sx, sy = rng.uniform(-0.5, 0.5, 2) * radius
        branches = int(rng.integers(7, 16))
        angles = rng.uniform(0, 2 * np.pi, branches)
        lengths = rng.uniform(0.5, 1.0, branches) * radius
        shadow = np.zeros((h, w), np.uint8)
        for a, length in zip(angles, lengths, strict=True):
            x0, y0 = cx + sx, cy + sy
            cv2.line(shadow, (int(x0), int(y0)), (int(x0 + np.cos(a) * length), int(y0 + np.sin(a) * length)), 255, 2)
        image = (image * (1 - 0.55 * (shadow[..., None] / 255.0))).astype(np.uint8)
        for a, length in zip(angles, lengths, strict=True):
            end = (int(cx + np.cos(a) * length), int(cy + np.sin(a) * length))
            cv2.line(image, (int(cx), int(cy)), end, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        cv2.circle(image, (int(cx), int(cy)), max(1, int(radius / 6)), colour, -1, cv2.LINE_AA)
        boxes.append(box[None])
        dead.append(np.array([True]))
        taken = np.vstack([taken, box[None]])
    for _ in range(int(rng.integers(1, 4))):  # fallen logs: long straight grey lines, not trees
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        a, length = rng.uniform(0, np.pi), rng.uniform(60, 160)
        grey = float(rng.uniform(170, 235))
        cv2.line(
            image,
            (int(x0), int(y0)),
            (int(x0 + np.cos(a) * length), int(y0 + np.sin(a) * length)),
            (grey, grey, grey),
            int(rng.integers(2, 5)),
            cv2.LINE_AA,
        )
    return Site(site.name + "+snags", image, np.vstack(boxes), np.concatenate(dead))


def synthetic_site(rng: np.random.Generator, index: int, size: int = 400) -> Site:
    """A drawn scene at 0.1 m: crowns (flat, shaded or two-tone discs of 2-9 m) on textured soil or grass.

    Like the scenes the tests and benchmarks draw (tests/treecore/conftest.py, scripts/make_sample.py), so
    the network finds their crowns too; a sixth of the ground is grass, which is not a tree.
    """
    coarse = rng.integers(0, 30, (size // 8 + 1, size // 8 + 1, 3)).astype(np.uint8)
    image = cv2.add(
        cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR),
        np.full((size, size, 3), (140, 115, 85), np.uint8),
    )
    grass = cv2.resize(
        (rng.random((size // 40 + 1, size // 40 + 1)) < 0.17).astype(np.uint8),
        (size, size),
        interpolation=cv2.INTER_NEAREST,
    )
    image[grass > 0] = (image[grass > 0] * np.array([0.55, 1.05, 0.5])).astype(np.uint8)
    boxes = []
    for _ in range(int(rng.integers(15, 40))):
        k = int(rng.uniform(10, 45))
        c, r = int(rng.integers(0, size)), int(rng.integers(0, size))
        style = (index + len(boxes)) % 3
        if style == 0:
            cv2.circle(image, (c, r), k, (40, 150, 40), -1)
        elif style == 1:
            for j in range(k, 0, -1):
                cv2.circle(image, (c, r), j, (30, 110 + int(100 * (1 - j / k)), 30), -1)
        else:
            cv2.circle(image, (c, r), k, (30, 110, 30), -1)
            cv2.circle(image, (c, r), max(1, k // 2), (45, 160, 45), -1)
        boxes.append([c - k, r - k, c + k + 1, r + k + 1])
    noise = rng.integers(-int(rng.integers(1, 25)), 25, image.shape)
    image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    b = np.clip(np.array(boxes, np.float64), 0, size)
    return Site(f"synthetic_{index}", image, b, np.zeros(len(b), bool))


def _resampled(site: Site, resolution: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and boxes at `resolution` metres per pixel (area interpolation, as a coarser sensor sees it)."""
    factor = GSD_M / resolution
    h, w = site.image.shape[:2]
    size = (max(1, int(w * factor)), max(1, int(h * factor)))
    image = cv2.resize(site.image, size, interpolation=cv2.INTER_AREA)
    return image, site.boxes * np.array([size[0] / w, size[1] / h] * 2), site.dead


def _targets(shape: tuple[int, int], boxes: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """(4, H', W') float32 on the output grid: Gaussian centre heatmap (1 at each centre), size, dead, weight.

    Output pixel j sits on working pixel STRIDE * j (its centre at working x = 2j + 0.5).
    """
    h, w = (shape[0] + STRIDE - 1) // STRIDE, (shape[1] + STRIDE - 1) // STRIDE
    boxes = (boxes + 0.5 * (STRIDE - 1)) / STRIDE
    heat = np.zeros((h, w), np.float32)
    size = np.zeros((h, w), np.float32)
    dead_map = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    for (x0, y0, x1, y1), is_dead in zip(boxes, dead, strict=True):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = ((x1 - x0) + (y1 - y0)) / 2
        sigma = max(0.75, side / 6)
        px, py = min(w - 1, max(0, int(cx))), min(h - 1, max(0, int(cy)))
        r = int(np.ceil(3 * sigma))
        ya, yb, xa, xb = max(0, py - r), min(h, py + r + 1), max(0, px - r), min(w, px + r + 1)
        ys, xs = np.mgrid[ya:yb, xa:xb]
        g = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma * sigma)).astype(np.float32)
        near = g > 0.5
        mine = near & (g > heat[ya:yb, xa:xb])
        size[ya:yb, xa:xb][mine] = side * STRIDE / SIZE_UNIT_PX
        dead_map[ya:yb, xa:xb][mine] = float(is_dead)
        weight[ya:yb, xa:xb][near] = 1.0
        heat[ya:yb, xa:xb] = np.maximum(heat[ya:yb, xa:xb], g)
        heat[py, px] = 1.0
    return np.stack([heat, size, dead_map, weight])


def build_pool(sites: list[Site], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, targets) pairs: each site and its snag copy at every training resolution."""
    rng = np.random.default_rng(seed)
    pool = []
    for site in [*sites, *(synthetic_site(rng, i) for i in range(SYNTHETIC_SCENES))]:
        for variant in (site, _paste_snags(site, rng, count=max(6, site.image.size // 3 // 20000))):
            for resolution in RESOLUTIONS:
                image, boxes, dead = _resampled(variant, resolution)
                if min(image.shape[:2]) < CROP:
                    continue
                pool.append((image, _targets(image.shape[:2], boxes, dead)))
    return pool


def _batch(pool: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images, targets = [], []
    for _ in range(BATCH):
        image, target = pool[int(rng.integers(len(pool)))]
        h, w = image.shape[:2]
        y, x = 2 * int(rng.integers(0, (h - CROP) // 2 + 1)), 2 * int(rng.integers(0, (w - CROP) // 2 + 1))
        crop = image[y : y + CROP, x : x + CROP].astype(np.float32)
        t = target[:, y // 2 : y // 2 + OUT, x // 2 : x // 2 + OUT]
        # Lighting and colour vary by site and season: gain, offset and a per-channel tint.
        crop = crop * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20) + rng.uniform(-10, 10, 3)
        crop = (np.clip(crop, 0, 255).transpose(2, 0, 1) - MEAN) / STD
        k = int(rng.integers(4))
        crop, t = np.rot90(crop, k, axes=(1, 2)), np.rot90(t, k, axes=(1, 2))
        if rng.integers(2):
            crop, t = crop[:, :, ::-1], t[:, :, ::-1]
        images.append(crop)
        targets.append(t)
    return np.ascontiguousarray(np.stack(images), np.float32), np.ascontiguousarray(np.stack(targets), np.float32)


def init_params(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-initialised (weight OIHW, bias) per layer; the head is 1 x 1 with 3 outputs."""
    params = []
    cin = 3
    for _ in LAYERS:
        fan_in = cin * 9
        params.append(
            (
                (rng.standard_normal((CHANNELS, cin, 3, 3)) * np.sqrt(2 / fan_in)).astype(np.float32),
                np.zeros(CHANNELS, np.float32),
            )
        )
        cin = CHANNELS
    head = (rng.standard_normal((3, CHANNELS, 1, 1)) * np.sqrt(1 / CHANNELS)).astype(np.float32)
    params.append((head, np.array([-4.0, 0.4, -2.0], np.float32)))
    return params


def train(sites: list[Site], *, seed: int, steps: int, log: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train on the sites; returns the float32 parameters."""
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_default_matmul_precision", "highest")
    rng = np.random.default_rng(seed)
    pool = build_pool(sites, seed)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init_params(rng)]

    def forward(p, x):
        for (w, b), (d, stride) in zip(p[:-1], LAYERS, strict=True):
            x = jax.lax.conv_general_dilated(
                x,
                w,
                (stride, stride),
                [(d, d), (d, d)],
                rhs_dilation=(d, d),
                dimension_numbers=("NCHW", "OIHW", "NCHW"),
            )
            x = jax.nn.relu(x + b[None, :, None, None])
        w, b = p[-1]
        return jnp.einsum("bchw,oc->bohw", x, w[:, :, 0, 0]) + b[None, :, None, None]

    def loss_fn(p, x, t):
        out = forward(p, x)
        logit, size, dead_logit = out[:, 0], out[:, 1], out[:, 2]
        heat, size_t, dead_t, weight = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
        prob = jax.nn.sigmoid(logit)
        log_p, log_1p = jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit)
        pos = (heat >= 1.0).astype(jnp.float32)
        # CenterNet's penalty-reduced focal loss: sharp peaks at centres, soft penalty near them.
        focal = -(pos * (1 - prob) ** 2 * log_p + (1 - pos) * (1 - heat) ** 4 * prob**2 * log_1p)
        n_pos = jnp.maximum(pos.sum(), 1.0)
        n_w = jnp.maximum(weight.sum(), 1.0)
        size_loss = (weight * jnp.abs(size - size_t)).sum() / n_w
        dead_bce = -(dead_t * jax.nn.log_sigmoid(dead_logit) + (1 - dead_t) * jax.nn.log_sigmoid(-dead_logit))
        dead_loss = (weight * dead_bce).sum() / n_w
        return focal.sum() / n_pos + size_loss + 0.5 * dead_loss

    warmup = min(50, steps // 2)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 4e-3, warmup, max(steps, warmup + 1), 1e-4)
    optimiser = optax.adam(schedule)
    state = optimiser.init(params)

    @jax.jit
    def step(p, s, x, t):
        value, grads = jax.value_and_grad(loss_fn)(p, x, t)
        updates, s = optimiser.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    started = time.perf_counter()
    for i in range(steps):
        x, t = _batch(pool, rng)
        params, state, value = step(params, state, x, t)
        if log and (i % 250 == 0 or i == steps - 1):
            print(f"  step {i:5d}  loss {float(value):.4f}  {time.perf_counter() - started:.0f} s", flush=True)
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in params]


def to_onnx(params: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The network as ONNX bytes (opset 13, no timestamps or host names: the same weights give the same bytes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = "image"
    for i, ((w, b), (d, stride)) in enumerate(zip(params[:-1], LAYERS, strict=True)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(
            helper.make_node(
                "Conv",
                [current, f"w{i}", f"b{i}"],
                [f"c{i}"],
                dilations=[d, d],
                pads=[d, d, d, d],
                strides=[stride, stride],
                kernel_shape=[3, 3],
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        current = f"r{i}"
    w, b = params[-1]
    inits += [numpy_helper.from_array(w, "w_head"), numpy_helper.from_array(b, "b_head")]
    nodes.append(helper.make_node("Conv", [current, "w_head", "b_head"], ["maps"], kernel_shape=[1, 1]))
    graph = helper.make_graph(
        nodes,
        "tree_centres",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="treecore-training")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def main() -> int:
    """Train and write (or check) the ONNX file."""
    global CHANNELS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--channels", type=int, default=CHANNELS, help="channels per layer (the shipped net: 8)")
    parser.add_argument("--leave-out", choices=[short_name(n) for n in IMAGES], help="train on the other two crops")
    parser.add_argument("--out", type=Path, default=MODEL)
    parser.add_argument("--check", action="store_true", help="retrain and compare with the file at --out")
    args = parser.parse_args()
    CHANNELS = args.channels
    names = [n for n in IMAGES if short_name(n) != args.leave_out]
    sites = [load_site(n) for n in names]
    print(f"training on {', '.join(short_name(n) for n in names)}: seed {args.seed}, {args.steps} steps", flush=True)
    started = time.perf_counter()
    data = to_onnx(train(sites, seed=args.seed, steps=args.steps))
    digest = hashlib.sha256(data).hexdigest()
    print(f"trained in {time.perf_counter() - started:.0f} s: {len(data)} bytes, sha256 {digest}")
    if args.check:
        committed = args.out.read_bytes()
        same = committed == data
        print(f"{args.out}: sha256 {hashlib.sha256(committed).hexdigest()} -> {'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    if args.out.resolve() == MODEL.resolve():
        DIGEST.write_text(f"{digest}  treecore/models/tree_centres.onnx (seed {args.seed}, {args.steps} steps)\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
