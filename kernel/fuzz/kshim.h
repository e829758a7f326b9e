/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel primitives kernel/sched/enoki_hint_ring.h expects, for the
 * host: the ring code compiles unchanged, and memcpy() reports every copy
 * so that the fuzzer sees which ring slots the walk reads.
 */
#ifndef ENOKI_FUZZ_KSHIM_H
#define ENOKI_FUZZ_KSHIM_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef uint32_t u32;
typedef int32_t s32;

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

/* single accesses the compiler may not tear, fuse or repeat, as the kernel's */
#define READ_ONCE(x)		__atomic_load_n(&(x), __ATOMIC_RELAXED)
#define WRITE_ONCE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
/* the same orderings as the kernel's, from the compiler's atomics */
#define smp_load_acquire(p)	__atomic_load_n((p), __ATOMIC_ACQUIRE)
/* pairs with smp_load_acquire() */
#define smp_store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)

void fuzz_copy_seen(void *dst, const void *src, size_t n);

static inline void *fuzz_memcpy(void *dst, const void *src, size_t n)
{
	fuzz_copy_seen(dst, src, n);
	return memcpy(dst, src, n);
}
#define memcpy fuzz_memcpy

#endif /* ENOKI_FUZZ_KSHIM_H */
