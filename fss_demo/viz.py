"""Pictures shared by the app and the notebooks: overlays in the paper's colours, gate maps, curves."""
import numpy as np
from PIL import Image, ImageFilter

SUPPORT_COLOR = (230, 30, 30)      # support with its mask in red (paper, Fig. 2)
PREDICTION_COLOR = (30, 100, 255)  # query with the prediction in blue


def iou(predicted, truth):
    """IoU of two bool masks of one size; 1.0 when both are empty."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def overlay(image, mask, color=PREDICTION_COLOR, alpha=0.5, max_side=None):
    """RGB uint8 image with `mask` tinted in `color` and outlined; optionally shrunk to `max_side`."""
    image = np.asarray(image, dtype=np.uint8)
    mask = np.asarray(mask, dtype=bool)
    if max_side and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    out = image.astype(np.float32)
    tint = np.array(color, dtype=np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * tint
    edge_image = Image.fromarray(mask.astype(np.uint8) * 255)
    edge = np.asarray(edge_image.filter(ImageFilter.MaxFilter(3))) != np.asarray(edge_image.filter(ImageFilter.MinFilter(3)))
    out[edge] = tint
    return out.astype(np.uint8)


def heatmap(values, size, cmap="magma", vmin=None, vmax=None):
    """A 2-D map -> RGB uint8 picture of `size` (H, W) through a matplotlib colour map."""
    import matplotlib

    values = np.asarray(values, dtype=np.float32)
    low = float(values.min()) if vmin is None else vmin
    high = float(values.max()) if vmax is None else vmax
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0, 1)
    rgb = (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))


def gate_overlay(image, gate_map, alpha=0.6, cmap="magma", vmin=0.0, vmax=1.0):
    """A gate map (h, w), in [vmin, vmax], laid over the image."""
    image = np.asarray(image, dtype=np.uint8)
    color = heatmap(gate_map, image.shape[:2], cmap=cmap, vmin=vmin, vmax=vmax).astype(np.float32)
    return ((1 - alpha) * image + alpha * color).astype(np.uint8)


def gate_saturation(gates, low=0.1, high=0.9):
    """{gate: (share of values < low, share > high)} for the sigmoid gates of one step (Karpathy et al. 2015)."""
    return {name: (float((gates[name] < low).mean()), float((gates[name] > high).mean()))
            for name in ("input_gate", "forget_gate", "output_gate")}


def plot_step_iou(convlstm_ious, or_ious, ax=None):
    """IoU after supports 1..K for the ConvLSTM and for the logical OR."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
    steps = np.arange(1, len(convlstm_ious) + 1)
    ax.plot(steps, 100 * np.asarray(convlstm_ious), "o-", color=np.array(PREDICTION_COLOR) / 255, label="ConvLSTM")
    ax.plot(steps, 100 * np.asarray(or_ious), "s--", color="0.45", label="logical OR")
    ax.set_xticks(steps)
    ax.set_xlabel("supports given")
    ax.set_ylabel("IoU with the true mask (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.figure.tight_layout()
    return ax.figure


def plot_shot_curves(summary):
    """Class mIoU against shots, one panel per data set, from `fss_demo.evaluate`'s summary."""
    import matplotlib.pyplot as plt

    names = list(summary["results"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    styles = {"convlstm": ("o-", np.array(PREDICTION_COLOR) / 255, "ConvLSTM"),
              "or": ("s--", "0.45", "logical OR"), "mean": ("d-.", "tab:green", "mean of 1-shot logits"),
              "prototype": ("^:", "tab:orange", "prototype baseline")}
    for ax, name in zip(axes[0], names):
        result = summary["results"][name]
        for method, (style, color, label) in styles.items():
            if method not in result:
                continue
            shots = sorted(int(k) for k in result[method])
            ax.plot(shots, [result[method][k if k in result[method] else str(k)]["class_miou"] for k in shots],
                    style, color=color, label=label)
        ax.set_title(f"{name} (novel classes)")
        ax.set_xlabel("shots")
        ax.set_ylabel("class mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def _label(tile, text):
    """Write a short caption on a white band above a tile."""
    from PIL import ImageDraw, ImageFont

    band = Image.new("RGB", (tile.shape[1], 26), (255, 255, 255))
    ImageDraw.Draw(band).text((4, 4), text, fill=(20, 20, 20), font=ImageFont.load_default(size=15))
    return np.concatenate([np.asarray(band), tile], axis=0)


def gate_ranges(steps):
    """{gate: (low, high)} of the channel-mean maps over all steps, so that steps share one colour scale
    stretched to what the gates actually do (they rarely span the whole 0..1)."""
    ranges = {}
    for name in ("input_gate", "forget_gate", "output_gate"):
        means = [step[name].mean(0) for step in steps]
        ranges[name] = (float(min(m.min() for m in means)), float(max(m.max() for m in means)))
    return ranges


def gate_strip(query, support, support_mask, gates, side=200, title=None, ranges=None):
    """One step of the ConvLSTM as a picture: the support (mask in red), then the channel-mean input,
    forget and output gates laid over the query (bright = more open; colour scale from `ranges`, else 0..1);
    `title` goes on a band above."""
    def fit(image):
        scale = side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

    query_small = fit(np.asarray(query, dtype=np.uint8))
    tiles = [_label(fit(overlay(support, support_mask, SUPPORT_COLOR)), "support")]
    for name, caption in (("input_gate", "input gate i"), ("forget_gate", "forget gate f"), ("output_gate", "output gate o")):
        mean = gates[name].mean(0)
        low, high = (ranges or {}).get(name, (0.0, 1.0))
        tiles.append(_label(gate_overlay(query_small, mean, vmin=low, vmax=high), f"{caption}: mean {mean.mean():.2f}"))
    height = max(t.shape[0] for t in tiles)
    padded = [np.pad(t, ((0, height - t.shape[0]), (0, 6), (0, 0)), constant_values=255) for t in tiles]
    strip = np.concatenate(padded, axis=1)
    return _label(strip, title) if title else strip


def stack_rows(rows, gap=10):
    """Stack pictures of possibly different widths top to bottom on white."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)


def gate_share_on_object(gate_map, mask):
    """Mean of a (h, w) gate map on the object and on the background of a mask (resized to the map)."""
    small = np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(gate_map.shape[::-1], Image.BILINEAR)) > 127
    inside = float(gate_map[small].mean()) if small.any() else float("nan")
    outside = float(gate_map[~small].mean()) if (~small).any() else float("nan")
    return inside, outside
