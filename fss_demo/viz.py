"""Pictures shared by the app and the notebooks: overlays in the paper's colours, gate maps, curves."""
from functools import lru_cache

import numpy as np
from PIL import Image

from . import images

SUPPORT_COLOR = (230, 30, 30)      # support with its mask in red (paper, Fig. 2)
PREDICTION_COLOR = (30, 100, 255)  # query with the prediction in blue


def overlay(image, mask, color=PREDICTION_COLOR, alpha=0.5, max_side=None):
    """RGB uint8 image with `mask` tinted in `color` and outlined; optionally shrunk to `max_side`."""
    image = np.asarray(image, dtype=np.uint8)
    mask = np.asarray(mask, dtype=bool)
    if max_side:
        image, mask = images.fit(image, max_side), images.fit(mask, max_side)
    tinted = ((1 - alpha) * image + alpha * np.array(color, dtype=np.float32)).astype(np.uint8)
    out = np.where(mask[..., None], tinted, image)  # faster than indexing by the mask
    out[outline(mask)] = color
    return out


def outline(mask):
    """Pixels of a bool mask with a 3x3 neighbour on the other side of its edge (a line 2 pixels wide)."""
    height, width = mask.shape
    padded = np.pad(mask, 1, mode="edge")
    edge = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            edge |= padded[dy:dy + height, dx:dx + width] != mask
    return edge


@lru_cache(maxsize=None)
def colormap(name):
    """A matplotlib colour map as a (256, 3) uint8 table: looked up once, then indexing is all numpy."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap(values, size, cmap="magma", vmin=None, vmax=None):
    """A 2-D map -> RGB uint8 picture of `size` (H, W) through a matplotlib colour map."""
    values = np.asarray(values, dtype=np.float32)
    low = float(values.min()) if vmin is None else vmin
    high = float(values.max()) if vmax is None else vmax
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0, 1)
    rgb = colormap(cmap)[np.round(scaled * 255).astype(np.uint8)]
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
            ax.plot(shots, [result[method][str(k)]["class_miou"] for k in shots],
                    style, color=color, label=label)
        ax.set_title(f"{name} (novel classes)")
        ax.set_xlabel("shots")
        ax.set_ylabel("class mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


@lru_cache(maxsize=None)
def _font(size):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _label(tile, text):
    """Write a short caption on a white band above a tile."""
    from PIL import ImageDraw

    band = Image.new("RGB", (tile.shape[1], 26), (255, 255, 255))
    ImageDraw.Draw(band).text((4, 4), text, fill=(20, 20, 20), font=_font(15))
    return np.concatenate([np.asarray(band), tile], axis=0)


def gate_ranges(steps):
    """{gate: (low, high)} of the channel-mean maps over all steps, so that steps share one colour scale
    stretched to what the gates actually do (they rarely span the whole 0..1)."""
    ranges = {}
    for name in ("input_gate", "forget_gate", "output_gate"):
        means = [step[name].mean(0) for step in steps]
        ranges[name] = (float(min(m.min() for m in means)), float(max(m.max() for m in means)))
    return ranges


def gate_strip(query, support, support_mask, gates, side=200, title=None, ranges=None, captions=True):
    """One step of the ConvLSTM as a picture: the support (mask in red), then the channel-mean input,
    forget and output gates laid over the query (bright = more open; colour scale from `ranges`, else 0..1).
    A band above says `title` and each gate's mean; `captions` names the columns (off for the rows of a stack
    under the first)."""
    query_small = images.fit(np.asarray(query, dtype=np.uint8), side, enlarge=True)
    support_small = overlay(support, support_mask, SUPPORT_COLOR, max_side=side)  # shrink first: cheaper
    tiles, means = [images.fit(support_small, side, enlarge=True)], []
    for name in ("input_gate", "forget_gate", "output_gate"):
        mean = gates[name].mean(0)
        low, high = (ranges or {}).get(name, (0.0, 1.0))
        tiles.append(gate_overlay(query_small, mean, vmin=low, vmax=high))
        means.append(f"{name[0]} {mean.mean():.2f}")
    if captions:
        tiles = [_label(tile, caption) for tile, caption in
                 zip(tiles, ("support", "input gate i", "forget gate f", "output gate o"))]
    height = max(t.shape[0] for t in tiles)  # every tile padded to side wide, so that the rows' columns line up
    padded = [np.pad(t, ((0, height - t.shape[0]), (0, side + 6 - t.shape[1]), (0, 0)), constant_values=255)
              for t in tiles]
    heading = "gate means: " + ", ".join(means)
    return _label(np.concatenate(padded, axis=1), f"{title}; {heading}" if title else heading)


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


def picture_grid(rows, tile=240, gap=8):
    """One picture of several rows, for a slide: rows = [(title, [(picture, caption), ...]), ...]. Each picture is
    fitted into a tile x tile box (aspect kept) with its caption under it; each row has its title above it."""
    from PIL import ImageDraw

    columns = max(len(items) for _, items in rows)
    titles = max(_font(20).getlength(title) for title, _ in rows)  # a single support's row is narrower than its title
    width = max(gap + columns * (tile + gap), int(titles) + 2 * gap)
    title_height, caption_height = 34, 26
    height = gap + sum(title_height + tile + caption_height + gap for _ in rows)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    top = gap
    for title, items in rows:
        draw.text((gap, top + 6), title, fill=(20, 20, 20), font=_font(20))
        top += title_height
        for column, (picture, caption) in enumerate(items):
            small = images.fit(np.asarray(picture, dtype=np.uint8), tile, enlarge=True)
            left = gap + column * (tile + gap)
            corner = (left + (tile - small.shape[1]) // 2, top + (tile - small.shape[0]) // 2)  # centred in its tile
            sheet.paste(Image.fromarray(small), corner)
            draw.text((left + 2, top + tile + 4), caption, fill=(20, 20, 20), font=_font(16))
        top += tile + caption_height + gap
    return np.asarray(sheet)
