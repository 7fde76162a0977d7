/* Memory-ordering primitives for words shared between processes (used by _ring.pyx).
 *
 * The ring's producer and consumer run in different processes, so ordinary loads and
 * stores are not enough: the compiler may reorder them, and so may the CPU on weakly
 * ordered machines (ARM, POWER). These wrappers name the ordering each access needs.
 * The GCC/Clang __atomic builtins on naturally aligned 32- and 64-bit words are
 * lock-free and address-free, which is what makes them valid across processes that map
 * the same memory (possibly at different addresses).
 */
#ifndef NATSX_ATOMIC_H
#define NATSX_ATOMIC_H

#include <stdint.h>

/* A counter this side owns: nobody else writes it, so no ordering is needed to read it. */
static inline uint64_t nx_load_relaxed_u64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* The other side's counter: everything it wrote before publishing is visible after. */
static inline uint64_t nx_load_acquire_u64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Publish a counter: every write made before it is visible to an acquiring reader. */
static inline void nx_store_release_u64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint32_t nx_load_relaxed_u32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void nx_store_relaxed_u32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline uint32_t nx_exchange_u32(uint32_t *p, uint32_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

/* A full barrier: orders an earlier store before a later load. The sleep/wake handshake
 * (store own flag or counter, then load the other side's) is the one place that needs it;
 * acquire/release alone lets both sides miss each other's store. */
static inline void nx_fence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

#endif /* NATSX_ATOMIC_H */
