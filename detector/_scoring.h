/* The score's arithmetic both compiled modules run (detector/_score.c's scored and round4, detector/_native.c's
 * decide): one copy, so the two cannot drift apart. detector/scoring.py is the reference. */
#ifndef FLOWBREAKER_SCORING_H
#define FLOWBREAKER_SCORING_H

#include <math.h>

/* scoring.score_of(p) with the floor p_floor */
static inline double
score_of_p(double p, double p_floor)
{
    if (p >= 1.0)
        return 0.0;
    if (p <= p_floor)
        return 1.0;
    return -log10(p) / 6.0;
}

/* an action's score from its p-values: of p_stat alone without a model (has_pc 0), else of
 * min(1, 3 min(p_stat, p_comb, p_harm)), min() as it compares */
static inline double
score_from(double ps, int has_pc, double pc, double ph, double p_floor)
{
    if (!has_pc)
        return score_of_p(ps, p_floor);
    double p = ps;
    if (pc < p)
        p = pc;
    if (ph < p)
        p = ph;
    p = 3.0 * p;
    return score_of_p(p < 1.0 ? p : 1.0, p_floor);
}

/* round(x, d) for d = log10(scale) places (3 or 4) when it can be taken without Python's decimal string: 1 with *out
 * set, 0 for round() to decide. Python's round() takes the exact decimal value of x to d places (half to even) and
 * reads it back as the nearest double. When |x| < 1e4, x * scale < 1e8: every half k + 0.5 near the product is a
 * double and rounding the product is monotonic, so the computed product is on the same side of each half as the
 * exact one, or on it: away from a half (by more than 1e-6, a margin) its nearest integer k is the one round()
 * takes, and k / scale (both exact, the division correctly rounded) is the double nearest that decimal, the one
 * round() reads back. Anything else (a tie or near one, large or not finite) is left to round(). */
static inline int
round_fast(double x, double scale, double *out)
{
    if (!(fabs(x) < 1e4))
        return 0;
    const double y = x * scale, f = floor(y), frac = y - f;
    if (!(fabs(frac - 0.5) > 1e-6))
        return 0;
    double r = (frac > 0.5 ? f + 1.0 : f) / scale;
    if (r == 0.0)
        r = copysign(0.0, x); /* round() keeps the sign of a zero */
    *out = r;
    return 1;
}

/* round(x, 4): round_fast's 4 places (scoring.round4's fast path) */
static inline int
round4_fast(double x, double *out)
{
    return round_fast(x, 10000.0, out);
}

#endif
