/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Enoki-C hint rings: the checks on what an application wrote into the
 * rings it shares with the kernel, apart from tasks, credentials and locks,
 * so that the same code runs under a host fuzzer (kernel/fuzz/). The
 * includer provides u32, s32, READ_ONCE(), WRITE_ONCE(), smp_load_acquire(),
 * smp_store_release(), memcpy() and memset(): the kernel's own, or the
 * fuzzer's stand-ins.
 *
 * The application may write anything into a ring at any time, so each
 * entry is copied out of its slot once and only the copy is checked and
 * handed on, and the kernel trusts its own indices over the ring's.
 */
#ifndef _KERNEL_SCHED_ENOKI_HINT_RING_H
#define _KERNEL_SCHED_ENOKI_HINT_RING_H

#include <uapi/linux/enoki.h>

/* What becomes of the hints of one queue; @arg is the caller's. */
struct enoki_hint_sink {
	void *arg;
	u32 hint_size;			/* the size every hint must have */
	bool (*gone)(void *arg);	/* may no hint reach the scheduler? */
	/* a checked copy: ENOKI_HINT_TAKEN or why not */
	int (*deliver)(void *arg, const struct enoki_hint *h);
	void (*count)(void *arg, int outcome);
	/* around the deliveries of one doorbell */
	void (*lock)(void *arg);
	void (*unlock)(void *arg);
};

/*
 * Checks the copy @h and hands it on: ENOKI_HINT_TAKEN or why not. The size
 * is checked before anything reads @h->data, whose length it gives.
 */
static inline int enoki_hint_check(const struct enoki_hint_sink *s,
				   const struct enoki_hint *h)
{
	if (s->gone(s->arg))
		return ENOKI_HINT_REJ_GONE;
	if (h->size != s->hint_size)
		return ENOKI_HINT_REJ_SIZE;
	return s->deliver(s->arg, h);
}

/*
 * The doorbell on @r, whose entries the kernel has consumed up to *@head:
 * every entry up to the application's tail, in order, each counted. Returns
 * how many were taken, or -EINVAL when the tail is more than a ring ahead
 * of *@head; then the ring is refused as a whole (counted once, no entry
 * read) and emptied.
 */
static inline long enoki_hint_ring_enter(struct enoki_hint_ring *r, u32 *head,
					 const struct enoki_hint_sink *s)
{
	struct enoki_hint h;
	long taken = 0;
	int outcome;
	u32 tail;

	/* pairs with the application's release of @tail: entries first */
	tail = smp_load_acquire(&r->tail);
	if (tail - *head > ENOKI_RING_ENTRIES) {
		s->count(s->arg, ENOKI_HINT_REJ_RING);
		*head = tail;
		taken = -EINVAL;
	}
	s->lock(s->arg);
	for (; *head != tail; (*head)++) {
		/* read once: the checks and the scheduler see this copy only */
		memcpy(&h, &r->hint[*head % ENOKI_RING_ENTRIES], sizeof(h));
		outcome = enoki_hint_check(s, &h);
		s->count(s->arg, outcome);
		taken += outcome == ENOKI_HINT_TAKEN;
	}
	s->unlock(s->arg);
	/* the slots are read before the application may write them again */
	smp_store_release(&r->head, *head);
	return taken;
}

/*
 * A reverse hint into @r, whose entries the kernel has produced up to
 * *@tail: @size bytes of @hint about @pid. @size is at most ENOKI_HINT_MAX
 * (the caller checked it against the queue's). When the application has
 * not consumed a ring's worth, the hint is dropped and counted in *@dropped
 * and the ring. Returns whether it was written.
 */
static inline bool enoki_hint_ring_put(struct enoki_hint_ring *r, u32 *tail,
				       u32 *dropped, s32 pid, const void *hint,
				       u32 size)
{
	struct enoki_hint *e;

	if (*tail - READ_ONCE(r->head) >= ENOKI_RING_ENTRIES) {
		WRITE_ONCE(r->dropped, ++*dropped);
		return false;
	}
	e = &r->hint[*tail % ENOKI_RING_ENTRIES];
	memset(e, 0, sizeof(*e));
	e->pid = pid;
	e->size = size;
	memcpy(e->data, hint, size);
	/* the entry before the tail that publishes it */
	smp_store_release(&r->tail, ++*tail);
	return true;
}

#endif /* _KERNEL_SCHED_ENOKI_HINT_RING_H */
