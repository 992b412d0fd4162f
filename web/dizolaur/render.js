// Canvas renderer of the Dizolaur page: draws a view model (plain data, built
// by game.js from the session's predicted / interpolated state) and nothing
// else, so it knows no protocol and no timing.
//
// View model, in world units (the game's fixed-point units, see fields.js):
//   {
//     ground: number,                // world units from the lane bottom to the ground line (0 ok)
//     span: number,                  // world units visible across the canvas
//     runnerX: number,               // the runner's left edge, world units from the lane's left edge
//     laneHeight: number,            // world units of sky shown above the ground
//     lanes: [{
//       seat, name, me, bot, empty,  // who
//       crashed, pending,            // pending = a crash awaiting confirmation
//       x0, y, w, h,                 // hitbox (ducking or standing): x0 from runnerX, y = feet above ground
//       distance,                    // for the label
//       obstacles: [{ x, y, w, h, kind }], // x = left edge, world units from the lane's left edge
//     }],
//   }

const COLORS = {
  sky: ['#17202b', '#1b2633'],
  skyMe: ['#1e3350', '#223c5e'],
  ground: '#5b6b7f',
  runner: ['#4ade80', '#60a5fa', '#f472b6', '#fbbf24'],
  crashed: '#7b8494',
  pending: '#f87171',
  cactus: '#22c55e',
  bird: '#e879f9',
  obstacle: '#f59e0b',
  text: '#e6e9ef',
  muted: '#9aa3b5',
};

/** Draws one frame. Returns nothing; never throws on odd values (it clamps). */
export function drawFrame(ctx, view) {
  const { width, height } = ctx.canvas;
  ctx.save();
  ctx.clearRect(0, 0, width, height);
  const lanes = view.lanes ?? [];
  const laneCount = Math.max(lanes.length, 1);
  const lanePx = height / laneCount;
  const span = view.span > 0 ? view.span : 1;
  const pxPerUnit = width / span;
  // A lane shows laneHeight units of sky; squash vertically if that does not fit.
  const yScale = Math.min(pxPerUnit, (lanePx - 18) / Math.max(view.laneHeight || 1, 1));
  lanes.forEach((lane, i) => drawLane(ctx, lane, view, {
    top: i * lanePx,
    lanePx,
    width,
    pxPerUnit,
    yScale,
    color: COLORS.runner[(Math.max(1, lane.seat ?? i + 1) - 1) % COLORS.runner.length],
  }));
  ctx.restore();
}

function drawLane(ctx, lane, view, g) {
  const { top, lanePx, width, pxPerUnit, yScale } = g;
  const sky = lane.me ? COLORS.skyMe : COLORS.sky;
  const gradient = ctx.createLinearGradient(0, top, 0, top + lanePx);
  gradient.addColorStop(0, sky[0]);
  gradient.addColorStop(1, sky[1]);
  ctx.fillStyle = gradient;
  ctx.fillRect(0, top, width, lanePx);

  const groundY = top + lanePx - 6 - (view.ground ?? 0) * yScale;
  ctx.fillStyle = COLORS.ground;
  ctx.fillRect(0, groundY, width, 2);
  if (lane.me) {
    ctx.strokeStyle = '#60a5fa';
    ctx.lineWidth = 3;
    ctx.strokeRect(1.5, top + 1.5, width - 3, lanePx - 3);
  }

  // Lane x (world units from the lane's left edge) → canvas x.
  const toX = (x) => x * pxPerUnit;
  const toY = (y) => groundY - y * yScale;

  for (const o of lane.obstacles ?? []) {
    const x = toX(o.x);
    const w = Math.max(2, o.w * pxPerUnit);
    if (x > width || x + w < 0) continue;
    const h = Math.max(2, o.h * yScale);
    ctx.fillStyle = COLORS[o.kind] ?? COLORS.obstacle;
    if (o.kind === 'bird') drawBird(ctx, x, toY(o.y) - h, w, h);
    else ctx.fillRect(x, toY(o.y) - h, w, h);
  }

  if (!lane.empty) {
    const w = Math.max(4, (lane.w ?? 1) * pxPerUnit);
    const h = Math.max(4, (lane.h ?? 1) * yScale);
    const x = toX((view.runnerX ?? 0) + (lane.x0 ?? 0));
    const y = toY(lane.y ?? 0) - h;
    ctx.fillStyle = lane.crashed ? COLORS.crashed : lane.pending ? COLORS.pending : g.color;
    ctx.fillRect(x, y, w, h);
    // An eye, so the runner has a facing.
    ctx.fillStyle = '#101418';
    ctx.fillRect(x + w * 0.65, y + Math.min(h * 0.2, 6), Math.max(2, w * 0.12), Math.max(2, w * 0.12));
    if (lane.crashed) {
      ctx.strokeStyle = COLORS.pending;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + w, y + h);
      ctx.moveTo(x + w, y);
      ctx.lineTo(x, y + h);
      ctx.stroke();
    }
  }

  ctx.font = '600 13px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  ctx.fillStyle = lane.empty ? COLORS.muted : COLORS.text;
  const label = lane.empty
    ? `${lane.seat}. empty`
    : `${lane.seat}. ${lane.name ?? '?'}${lane.bot ? ' (bot)' : ''}${lane.me ? ' · you' : ''}`;
  ctx.fillText(label, 8, top + 6);
  if (!lane.empty) {
    // Distance next to the name: the right side stays free for the net-stats overlay.
    const x = 8 + ctx.measureText(label).width + 14;
    ctx.fillStyle = lane.crashed ? COLORS.pending : COLORS.text;
    ctx.fillText(`${Math.floor(lane.distance ?? 0)} m${lane.crashed ? ' · out' : ''}`, x, top + 6);
  }
}

// A bird: the body fills the hitbox's middle, the wings its full width.
function drawBird(ctx, x, y, w, h) {
  ctx.fillRect(x + w * 0.15, y + h * 0.35, w * 0.7, h * 0.35);
  ctx.beginPath();
  ctx.moveTo(x, y + h * 0.5);
  ctx.lineTo(x + w * 0.5, y);
  ctx.lineTo(x + w, y + h * 0.5);
  ctx.lineTo(x + w * 0.5, y + h);
  ctx.closePath();
  ctx.globalAlpha = 0.55;
  ctx.fill();
  ctx.globalAlpha = 1;
}
