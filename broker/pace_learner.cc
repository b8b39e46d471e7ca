#include "broker/pace_learner.h"

#include <algorithm>
#include <cmath>

namespace pacer {

namespace {

std::int64_t clamp_spacing(std::int64_t us) {
  return std::clamp<std::int64_t>(us, PaceLearner::kMinSpacingUs,
                                  PaceLearner::kMaxSpacingUs);
}

}  // namespace

void PaceLearner::begin_epoch(std::int64_t spacing_us, Millis now) {
  spacing_us = clamp_spacing(spacing_us);
  if (spacing_us != spacing_us_) changed_ = true;
  spacing_us_ = spacing_us;
  epoch_start_ = now;
  epoch_accepts_ = 0;
}

void PaceLearner::on_accept(Millis start, Millis now) {
  if (spacing_us_ == 0) {
    // The first answer: one request per round trip is a pace the server
    // took; learning starts there, or at kFirstSpacingUs (20/s) when the
    // round trip is shorter (loopback), halving from there if it is clean.
    begin_epoch(std::max<std::int64_t>(kFirstSpacingUs, (now - start) * 1000),
                now);
    return;
  }
  if (start < epoch_start_) return;
  if (learned_) {
    // A quiet stretch at a spacing that refusals lengthened: take a step
    // back towards the one learning settled on, but not to one refused in
    // the last kRefusedMemoryMs.
    std::int64_t floor = best_us_;
    if (refused_us_ > 0 && now - refused_at_ < kRefusedMemoryMs)
      floor = std::max(floor, refused_us_ + refused_us_ / 100 + 1);
    if (spacing_us_ > floor && now - epoch_start_ >= kQuietMs) {
      begin_epoch(std::max(floor, spacing_us_ - spacing_us_ / 100), now);
      refusals_learned_ = 0;
    }
    return;
  }
  ++epoch_accepts_;
  // Three times the longest run refused epochs saw, but no more than
  // kMaxEpochMs of starts at this spacing.
  const std::int64_t needed = std::max<std::int64_t>(
      kEpochStarts, std::min<std::int64_t>(3 * longest_run_,
                                           kMaxEpochMs * 1000 / spacing_us_));
  if (epoch_accepts_ < needed || now - epoch_start_ < kEpochMs) return;
  // A clean epoch: this spacing is long enough.
  hi_us_ = spacing_us_;
  if (lo_us_ == 0 && spacing_us_ <= kMinSpacingUs) {
    learned_ = true;
    changed_ = true;
    return;
  }
  settle();
  if (learned_) return;
  begin_epoch(lo_us_ == 0 ? spacing_us_ / 2 : lo_us_ + (hi_us_ - lo_us_) / 2,
              now);
  estimate_from_runs();
}

void PaceLearner::on_refuse(Millis start, Millis now) {
  if (spacing_us_ == 0) {
    // Refused before anything was learned: start slowly.
    begin_epoch(std::max<std::int64_t>(1, now - start) * 2000, now);
    return;
  }
  if (learned_) {
    if (start < epoch_start_) return;  // sent before the last change
    if (refusals_learned_ == 0 ||
        now - first_refusal_learned_ > kRelearnWindowMs) {
      refusals_learned_ = 0;
      first_refusal_learned_ = now;
    }
    refused_us_ = spacing_us_;
    refused_at_ = now;
    if (++refusals_learned_ < kRelearnRefusals) {
      // A bucket with a burst takes a spacing a little too short for a
      // long while before it refuses: a refusal at the learned pace means
      // it was, by about the tolerance.
      lo_us_ = spacing_us_;
      const auto step = static_cast<std::int64_t>(
          std::ceil(static_cast<double>(spacing_us_) * kRelativeTolerance));
      hi_us_ = spacing_us_ + std::max<std::int64_t>(step, 1);
      begin_epoch(hi_us_, now);
      return;
    }
    // The server no longer takes the learned pace: learn again above it.
    refusals_learned_ = 0;
    learned_ = false;
    lo_us_ = spacing_us_;
    hi_us_ = 0;
    begin_epoch(spacing_us_ + spacing_us_ / 4, now);
    return;
  }
  if (start < epoch_start_) return;  // sent at the previous spacing
  // Refused before any start of the epoch was accepted: the server had
  // no room at all (a window not over yet, a pause too short), which says
  // nothing of the spacing.
  if (epoch_accepts_ == 0) return;
  lo_us_ = std::max(lo_us_, spacing_us_);
  runs_[0] = runs_[1];
  runs_[1] = {spacing_us_, epoch_accepts_};
  longest_run_ = std::max(longest_run_, epoch_accepts_);
  // A refusal at a spacing once clean: that epoch was absorbed by a burst.
  if (hi_us_ > 0 && lo_us_ >= hi_us_) hi_us_ = 0;
  settle();
  if (learned_) return;
  begin_epoch(hi_us_ == 0 ? lo_us_ * 2 : lo_us_ + (hi_us_ - lo_us_) / 2, now);
  estimate_from_runs();
}

void PaceLearner::estimate_from_runs() {
  // Two refused epochs: (n1 - 1)(1 - s1 r) = (n2 - 1)(1 - s2 r) = b.
  const Run& a = runs_[0];
  const Run& b = runs_[1];
  if (a.spacing_us == 0 || b.spacing_us == 0 || a.spacing_us == b.spacing_us)
    return;
  // A leaky bucket's run grows with the spacing; runs about equal are a
  // window's quota running out (a fixed window), which this says nothing of.
  const std::int64_t longer = std::max(a.accepts, b.accepts);
  if (std::llabs(a.accepts - b.accepts) * 5 < longer) return;
  const double n1 = static_cast<double>(a.accepts - 1);
  const double n2 = static_cast<double>(b.accepts - 1);
  const double s1 = static_cast<double>(a.spacing_us);
  const double s2 = static_cast<double>(b.spacing_us);
  const double t = (n2 * s2 - n1 * s1) / (n2 - n1);
  if (!std::isfinite(t) || t <= static_cast<double>(lo_us_)) return;
  if (hi_us_ > 0 && t >= static_cast<double>(hi_us_)) return;
  // Just above the estimate: a clean epoch there nearly settles it.
  const auto candidate = static_cast<std::int64_t>(
      std::ceil(t * (1 + kRelativeTolerance / 2)));
  if (hi_us_ > 0 && candidate >= hi_us_) return;
  begin_epoch(candidate, epoch_start_);
}

void PaceLearner::settle() {
  if (hi_us_ == 0 || lo_us_ == 0) return;
  if (static_cast<double>(hi_us_ - lo_us_) >
      kRelativeTolerance * static_cast<double>(hi_us_))
    return;
  // Learned: the spacing seen to work, and the burst the refused epochs
  // show at it (the least of their estimates: never more than seen).
  learned_ = true;
  std::int64_t burst = -1;
  for (const Run& r : runs_) {
    if (r.spacing_us == 0 || r.accepts < 1) continue;
    const double b = static_cast<double>(r.accepts - 1) *
                     (1 - static_cast<double>(r.spacing_us) /
                              static_cast<double>(hi_us_));
    const auto whole = static_cast<std::int64_t>(std::floor(std::max(0.0, b)));
    burst = burst < 0 ? whole : std::min(burst, whole);
  }
  burst_ = std::max<std::int64_t>(0, burst);
  spacing_us_ = hi_us_;
  best_us_ = hi_us_;
  changed_ = true;
}

std::optional<LimitSpec> PaceLearner::limit() const {
  if (spacing_us_ == 0) return std::nullopt;
  // 100 starts per 100 spacings: the window in whole milliseconds keeps
  // the spacing to 10 us.
  LimitSpec spec;
  spec.amount = 100;
  spec.window_ms = std::max<Millis>(1, (spacing_us_ + 9) / 10);
  spec.burst = burst_;
  return spec;
}

bool PaceLearner::take_changed() {
  bool c = changed_;
  changed_ = false;
  return c;
}

void PaceLearner::restore(std::int64_t spacing_us, std::int64_t burst,
                          bool learned, Millis now) {
  if (spacing_us <= 0) return;
  spacing_us_ = clamp_spacing(spacing_us);
  epoch_start_ = now;
  epoch_accepts_ = 0;
  burst_ = std::max<std::int64_t>(0, burst);
  learned_ = learned;
  if (learned) {
    hi_us_ = spacing_us_;
    best_us_ = spacing_us_;
  }
  changed_ = true;
}

}  // namespace pacer
