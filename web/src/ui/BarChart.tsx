// A bar chart in plain SVG: a few hundred bytes instead of a charting library. Screen
// readers get the same numbers as a table.

export interface Bar {
  label: string;
  value: number;
}

export function BarChart({
  bars,
  title,
  format = (v) => String(v),
  height = 180,
  horizontal = false,
}: {
  bars: Bar[];
  title: string;
  format?: (v: number) => string;
  height?: number;
  horizontal?: boolean;
}) {
  const max = Math.max(...bars.map((b) => b.value), 0);
  const scale = max > 0 ? max : 1;
  const table = (
    <table className="sr-only">
      <caption>{title}</caption>
      <thead>
        <tr>
          <th scope="col">Label</th>
          <th scope="col">Value</th>
        </tr>
      </thead>
      <tbody>
        {bars.map((b) => (
          <tr key={b.label}>
            <td>{b.label}</td>
            <td>{format(b.value)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
  if (horizontal) {
    return (
      <figure className="chart chart-h">
        <div aria-hidden="true">
          {bars.map((b) => (
            <div className="hbar" key={b.label}>
              <span className="hbar-label">{b.label}</span>
              <span className="hbar-track">
                <span className="hbar-fill" style={{ width: `${(b.value / scale) * 100}%` }} />
              </span>
              <span className="hbar-value">{format(b.value)}</span>
            </div>
          ))}
        </div>
        {table}
      </figure>
    );
  }
  const width = 600;
  const pad = { top: 10, bottom: 24, left: 4, right: 4 };
  const inner = height - pad.top - pad.bottom;
  const step = bars.length ? (width - pad.left - pad.right) / bars.length : 0;
  const barW = Math.max(step * 0.7, 1);
  const labelEvery = Math.ceil(bars.length / 8);
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${title}: highest ${format(max)}`}>
        <line x1={pad.left} x2={width - pad.right} y1={height - pad.bottom} y2={height - pad.bottom} className="axis" />
        {bars.map((b, i) => {
          const h = (b.value / scale) * inner;
          const x = pad.left + i * step + (step - barW) / 2;
          return (
            <g key={b.label}>
              <rect className="bar" x={x} y={height - pad.bottom - h} width={barW} height={Math.max(h, b.value > 0 ? 1 : 0)}>
                <title>{`${b.label}: ${format(b.value)}`}</title>
              </rect>
              {i % labelEvery === 0 && (
                <text x={x + barW / 2} y={height - 6} textAnchor="middle" className="tick">
                  {b.label}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      {table}
    </figure>
  );
}
