"""Run artefacts as pictures: colour masks, curves.png and predictions.png (matplotlib, Agg backend).

Figures are built with matplotlib's object API (Figure + FigureCanvasAgg), not
pyplot, so nothing global accumulates over a long run and no display is needed.
"""
import numpy as np

IGNORE_COLOR = (255, 255, 255)


def palette(num_classes):
    """(num_classes, 3) uint8 colours: black background, then well-separated hues."""
    base = np.array([
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
        (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
    ], dtype=np.uint8)
    if num_classes <= len(base):
        return base[:num_classes]
    rng = np.random.default_rng(0)   # more classes than named colours: fixed random ones
    extra = rng.integers(0, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def colorize(mask, num_classes):
    """(H, W) class ids -> (H, W, 3) uint8 RGB; 255 (ignore) is white."""
    mask = np.asarray(mask)
    colors = palette(num_classes)
    out = np.empty(mask.shape + (3,), dtype=np.uint8)
    out[...] = IGNORE_COLOR
    valid = (mask >= 0) & (mask < num_classes)
    out[valid] = colors[mask[valid]]
    return out


def save_mask_png(mask, num_classes, path):
    """A palette PNG: pixel values are the class ids, shown in the class colours."""
    from PIL import Image
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    colors = np.zeros((256, 3), dtype=np.uint8)
    colors[:num_classes] = palette(num_classes)[:256]
    colors[255] = IGNORE_COLOR
    image.putpalette(colors.ravel().tolist())
    image.save(path)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_curves(history, path):
    """Train loss (and val loss) and val mIoU / pixel accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = _figure(10, 4)
    loss_ax, score_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], "s--", label="val loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    score_ax.plot(epochs, [h["val_miou"] for h in history], "o-", label="val mIoU")
    score_ax.plot(epochs, [h["val_pixel_accuracy"] for h in history], "s--", label="val pixel accuracy")
    score_ax.plot(epochs, [h["train_miou"] for h in history], "^:", label="train mIoU (running)")
    if "val_foreground_iou" in history[0]:
        score_ax.plot(epochs, [h["val_foreground_iou"] for h in history], "D-", label="val foreground IoU")
    score_ax.set_xlabel("epoch")
    score_ax.set_ylim(0, 1)
    score_ax.legend(loc="lower right")
    score_ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator
    for ax in (loss_ax, score_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save_predictions(images, masks, preds, num_classes, class_names, path):
    """One row per sample: image | ground truth | prediction, with a class colour legend."""
    n = len(images)
    fig = _figure(7.5, 2.5 * n + 0.6)
    axes = np.asarray(fig.subplots(n, 3, squeeze=False))
    for row, (image, mask, pred) in enumerate(zip(images, masks, preds)):
        shown = np.clip(np.asarray(image).transpose(1, 2, 0), 0, 1)
        if shown.shape[2] == 1:
            shown = shown[:, :, 0]
        for col, (picture, title) in enumerate(((shown, "image"), (colorize(mask, num_classes), "truth"),
                                                (colorize(pred, num_classes), "prediction"))):
            ax = axes[row, col]
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
    from matplotlib.patches import Patch
    colors = palette(num_classes) / 255.0
    handles = [Patch(color=colors[c], label=str(name)) for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (2.5 * n + 0.6), 1, 1))
    fig.savefig(path, dpi=100)
