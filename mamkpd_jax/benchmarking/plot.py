"""images/s against batch size as a png, one line per (model, runtime, dtype, scan, mode),
the peers dashed; beside it, when the rows carry GMAC/s, GMAC/s against batch with the
roofline matmuls as horizontal lines. matplotlib's Figure, not pyplot, so the caller's
backend is left alone."""


def _series(rows, peer_rows):
  """{(label, style): rows sorted by batch} of our rows (solid) and the peers' (dashed)."""
  series = {}
  for row in rows:
    runtime = row.get("runtime", "jax")
    label = " ".join(s for s in (row["model"], runtime, row["dtype"], row["scan_impl"],
                                 row.get("mode", "inference")) if s)
    series.setdefault((label, "-"), []).append(row)
  for peer in peer_rows:
    if "images_per_s" in peer:
      label = " ".join((peer["model"], peer.get("runtime", "torch"), peer["dtype"]))
      series.setdefault((label, "--"), []).append(peer)
  return {key: sorted(points, key=lambda r: r["batch"]) for key, points in series.items()}


def _batch_axis(ax, batches, ylabel):
  ax.set_xscale("log", base=2)
  ax.set_xticks(batches, [str(b) for b in batches])
  ax.set_yscale("log")
  ax.set_xlabel("batch size")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3, which="both")


def plot_throughput(rows, peer_rows, path, title, roofline_rows=None):
  """Writes the plot of our `rows`, the peers' timed `peer_rows` and the roofline rows
  (matmul GMAC/s) to `path`."""
  from matplotlib.figure import Figure   # pylint: disable=g-import-not-at-top

  series = _series(rows, peer_rows)
  rated = {key: [r for r in points if r.get("gmacs_per_s")] for key, points in series.items()}
  rated = {key: points for key, points in rated.items() if points}
  fig = Figure(figsize=(12 if rated else 7, 4.5), dpi=110)
  axes = fig.subplots(1, 2 if rated else 1, squeeze=False)[0]
  batches = sorted({r["batch"] for points in series.values() for r in points})
  for (label, style), points in series.items():
    axes[0].plot([r["batch"] for r in points], [r["images_per_s"] for r in points], style,
                 marker="o", label=label)
  _batch_axis(axes[0], batches, "images / s")
  axes[0].set_title(title, fontsize=9)
  axes[0].legend(fontsize=6)
  if rated:
    for (label, style), points in rated.items():
      axes[1].plot([r["batch"] for r in points], [r["gmacs_per_s"] for r in points], style,
                   marker="o", label=label)
    for row in roofline_rows or []:
      axes[1].axhline(row["gmacs_per_s"], color="grey", lw=0.8,
                      ls="-" if row["dtype"] == "float32" else ":")
      axes[1].annotate(f"{row['model']} {row['runtime']} {row['dtype']}",
                       (batches[0], row["gmacs_per_s"]), fontsize=6, color="grey",
                       va="bottom")
    _batch_axis(axes[1], batches, "GMAC / s (multiply-adds per crop x crops / s)")
    axes[1].set_title("compute rate; grey: the matmul roofline", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
