/* rng.h -- small seedable pseudo-random numbers for the simulator.
 *
 * splitmix64 (Steele, Lea, Flood 2014): 8 bytes of state, passes BigCrush,
 * and the same seed gives the same sequence on every platform, which is what
 * makes --seed runs repeatable. Each virtual sensor owns one, so a sensor's
 * values do not depend on how the event loop interleaves sensors.
 * Not for secrets. No global state, nothing here logs or exits. */
#ifndef SIM_RNG_H
#define SIM_RNG_H

#include <stddef.h>
#include <stdint.h>

struct rng {
    uint64_t s;
};

/* Any seed is fine, 0 included. */
void rng_seed(struct rng *r, uint64_t seed);

/* Next 64 random bits. */
uint64_t rng_next(struct rng *r);

/* Uniform in [0, 1), 53 bits. */
double rng_unit(struct rng *r);

/* Uniform in [lo, hi). */
double rng_between(struct rng *r, double lo, double hi);

/* Uniform integer in [0, n); n must be > 0. Lemire's multiply-shift, with
 * the rejection step so small n are not biased. */
uint64_t rng_below(struct rng *r, uint64_t n);

/* The splitmix64 output function as a pure hash: derives independent
 * sub-seeds (e.g. per sensor) from one seed. */
uint64_t rng_mix(uint64_t x);

/* Fills buf with n bytes from the kernel (getrandom(2), /dev/urandom as a
 * fallback). Returns 0, or -1 with errno set. For ids that must be unique
 * across processes and containers. */
int rng_os_bytes(void *buf, size_t n);

#endif
