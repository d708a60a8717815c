"""images/s against batch size as a png: one line per (model, dtype, scan, mode), the
peers dashed. matplotlib's Figure, not pyplot, so the caller's backend is left alone."""


def plot_throughput(rows, peer_rows, path, title):
  """Writes the plot of our `rows` and the peers' timed `peer_rows` to `path`."""
  from matplotlib.figure import Figure   # pylint: disable=g-import-not-at-top

  series = {}
  for row in rows:
    scan = f"{row['scan_impl']} {row.get('mode', 'inference')}"
    series.setdefault((row["model"], row["dtype"], scan, "-"), []).append(row)
  for peer in peer_rows:
    if "images_per_s" in peer:
      series.setdefault((peer["model"], peer["dtype"], "", "--"), []).append(peer)
  fig = Figure(figsize=(7, 4.5), dpi=110)
  ax = fig.subplots()
  for (name, dtype, impl, style), points in series.items():
    points = sorted(points, key=lambda r: r["batch"])
    label = " ".join(s for s in (name, dtype, impl) if s)
    ax.plot([r["batch"] for r in points], [r["images_per_s"] for r in points], style,
            marker="o", label=label)
  ax.set_xscale("log", base=2)
  batches = sorted({r["batch"] for points in series.values() for r in points})
  ax.set_xticks(batches, [str(b) for b in batches])
  ax.set_yscale("log")
  ax.set_xlabel("batch size")
  ax.set_ylabel("images / s")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
