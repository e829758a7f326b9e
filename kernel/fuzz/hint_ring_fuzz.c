// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for Enoki-C's hint rings: the real ring code
 * (kernel/sched/enoki_hint_ring.h) run on rings, indices and hint sizes an
 * application could produce, with the kernel-only parts (task lookup,
 * credentials, the scheduler) replaced by stubs that check what reaches
 * them. Any broken invariant aborts with "invariant broken: ...".
 *
 * Input: struct fuzz_head, then up to FUZZ_OPS reverse-ring operations,
 * then the to_kernel ring's slots; missing bytes read as zero.
 */
#include <stdio.h>
#include <stdlib.h>

#include "kshim.h"
#include "enoki_hint_ring.h"

#define FUZZ_DOORBELLS	2
#define FUZZ_OPS	32

/* laid out without padding the compiler chooses, so seeds stay valid */
struct fuzz_doorbell {
	uint32_t tail;
	uint8_t raw_tail;	/* bit 0: take @tail as written, else head + @ahead */
	uint8_t ahead;
	uint8_t unused[2];
};

struct fuzz_head {
	uint64_t gone;		/* bit (entry % 64): the queue is gone then */
	uint32_t head;		/* the kernel's to_kernel consumer index */
	uint32_t rev_tail;	/* the kernel's to_user producer index */
	uint32_t rev_head;	/* the application's to_user consumer index */
	uint8_t hint_size;
	uint8_t unused[3];
	struct fuzz_doorbell bell[FUZZ_DOORBELLS];
};

struct fuzz_op {
	uint8_t op;		/* bit 0: a reverse hint, else the application consumes */
	uint8_t a, b, c;
};

_Static_assert(sizeof(struct fuzz_head) == 40, "seed layout");
_Static_assert(sizeof(struct fuzz_op) == 4, "seed layout");

#define FUZZ_SLOTS_AT	(sizeof(struct fuzz_head) + FUZZ_OPS * sizeof(struct fuzz_op))

#ifndef ENOKI_FUZZ_BREAK
#define ENOKI_FUZZ_BREAK "none"
#endif
static const char *const fuzz_break = ENOKI_FUZZ_BREAK;

static void fail(const char *what)
{
	fprintf(stderr, "invariant broken: %s (ring code built with break '%s')\n",
		what, fuzz_break);
	abort();
}

#define CHECK(cond)	do { if (!(cond)) fail(#cond); } while (0)

/* The doorbell under test: what the walk may touch and what it did. */
static struct {
	struct enoki_hint_ring *ring;
	struct enoki_hint_ring before;	/* the slots as the application left them */
	u32 hint_size;
	uint64_t gone;
	u32 entry;			/* entries checked so far */
	unsigned int reads[ENOKI_RING_ENTRIES];
	uint64_t counts[ENOKI_HINT_OUTCOMES];
	uint64_t delivered;
	bool locked;
	const struct enoki_hint *last_copy;
} bell;

void fuzz_copy_seen(void *dst, const void *src, size_t n)
{
	const char *s = src, *lo, *hi;
	size_t off;

	if (!bell.ring)
		return;
	lo = (const char *)bell.ring;
	hi = lo + sizeof(*bell.ring);
	if (s + n <= lo || s >= hi)
		return;
	/* a read of the shared ring: exactly one whole slot, once */
	CHECK(s >= (const char *)bell.ring->hint && s + n <= hi);
	off = s - (const char *)bell.ring->hint;
	CHECK(off % sizeof(struct enoki_hint) == 0 &&
	      n == sizeof(struct enoki_hint));
	CHECK(++bell.reads[off / sizeof(struct enoki_hint)] == 1);
	/* the copy must live outside the ring, where the application can't write */
	CHECK((const char *)dst + n <= lo || (const char *)dst >= hi);
	bell.last_copy = dst;
}

static bool stub_gone(void *arg)
{
	CHECK(arg == &bell);
	return bell.gone >> (bell.entry % 64) & 1;
}

/* As the kernel's: find the task, check it, hand it on; here by the pid's bits. */
static int stub_deliver(void *arg, const struct enoki_hint *h)
{
	static const int outcomes[] = {
		ENOKI_HINT_TAKEN, ENOKI_HINT_REJ_TASK, ENOKI_HINT_REJ_OUTSIDE,
		ENOKI_HINT_REJ_PERM, ENOKI_HINT_REJ_REFUSED, ENOKI_HINT_REJ_GONE,
	};
	struct enoki_hint *slot;

	CHECK(arg == &bell && bell.locked);
	CHECK(h == bell.last_copy);
	CHECK(h->size == bell.hint_size && h->size <= ENOKI_HINT_MAX);
	CHECK(!stub_gone(arg));
	bell.delivered++;
	/* the application rewrites the slot meanwhile: the copy must not change */
	slot = &bell.ring->hint[(bell.before.head + bell.entry) % ENOKI_RING_ENTRIES];
	WRITE_ONCE(slot->size, h->size + 1);
	CHECK(h->size == bell.hint_size);
	return outcomes[(u32)h->pid % ARRAY_SIZE(outcomes)];
}

static void stub_count(void *arg, int outcome)
{
	CHECK(arg == &bell);
	CHECK(outcome >= 0 && outcome < ENOKI_HINT_OUTCOMES);
	bell.counts[outcome]++;
	if (outcome != ENOKI_HINT_REJ_RING)
		bell.entry++;
}

static void stub_lock(void *arg)
{
	CHECK(!bell.locked);
	bell.locked = true;
}

static void stub_unlock(void *arg)
{
	CHECK(bell.locked);
	bell.locked = false;
}

/* What the checks must make of the entry the application left at @i. */
static int expected(u32 i)
{
	const struct enoki_hint *h = &bell.before.hint[i % ENOKI_RING_ENTRIES];

	if (bell.gone >> ((i - bell.before.head) % 64) & 1)
		return ENOKI_HINT_REJ_GONE;
	if (h->size != bell.hint_size)
		return ENOKI_HINT_REJ_SIZE;
	return -1;
}

/* One doorbell on @r at the kernel's *@head; checks what became of it. */
static void doorbell(struct enoki_hint_ring *r, u32 *head, u32 tail)
{
	const struct enoki_hint_sink sink = {
		.arg = &bell, .hint_size = bell.hint_size, .gone = stub_gone,
		.deliver = stub_deliver, .count = stub_count,
		.lock = stub_lock, .unlock = stub_unlock,
	};
	uint64_t want_gone = 0, want_size = 0, total = 0;
	u32 head0 = *head, n = tail - head0, i;
	long taken;
	int o;

	r->tail = tail;
	r->head = head0;
	memset(bell.reads, 0, sizeof(bell.reads));
	memset(bell.counts, 0, sizeof(bell.counts));
	bell.before = *r;
	bell.before.head = head0;
	bell.entry = 0;
	bell.delivered = 0;
	bell.ring = r;
	taken = enoki_hint_ring_enter(r, head, &sink);
	bell.ring = NULL;

	CHECK(!bell.locked);
	CHECK(*head == tail && r->head == tail);
	for (o = 0; o < ENOKI_HINT_OUTCOMES; o++)
		total += bell.counts[o];
	if (n > ENOKI_RING_ENTRIES) {
		/* refused as a whole: counted once, nothing read */
		CHECK(taken == -EINVAL);
		CHECK(total == 1 && bell.counts[ENOKI_HINT_REJ_RING] == 1);
		for (i = 0; i < ENOKI_RING_ENTRIES; i++)
			CHECK(bell.reads[i] == 0);
		return;
	}
	for (i = head0; i != tail; i++) {
		CHECK(bell.reads[i % ENOKI_RING_ENTRIES] == 1);
		o = expected(i);
		want_gone += o == ENOKI_HINT_REJ_GONE;
		want_size += o == ENOKI_HINT_REJ_SIZE;
	}
	CHECK(total == n && bell.counts[ENOKI_HINT_REJ_RING] == 0);
	CHECK(taken == (long)bell.counts[ENOKI_HINT_TAKEN]);
	CHECK(bell.counts[ENOKI_HINT_REJ_SIZE] == want_size);
	CHECK(bell.delivered == n - want_gone - want_size);
	CHECK(bell.counts[ENOKI_HINT_REJ_GONE] >= want_gone);
}

/* Reverse hints and the application's consumption, by @ops. */
static void reverse(const struct fuzz_head *in, const struct fuzz_op *ops)
{
	struct enoki_hint_ring *r = malloc(sizeof(*r));
	struct enoki_hint_ring before, rest;
	u32 tail = in->rev_tail, dropped = 0, puts = 0, written = 0;
	uint8_t data[ENOKI_HINT_MAX];
	const struct enoki_hint *e;
	unsigned int k, i, slot;
	bool full, ok;

	memset(r, 0xa5, sizeof(*r));	/* whatever the application left */
	r->head = in->rev_head;
	for (k = 0; k < FUZZ_OPS; k++) {
		const struct fuzz_op *op = &ops[k];
		u32 size = op->b % (ENOKI_HINT_MAX + 1);

		if (!(op->op & 1)) {
			/* the application consumes, or writes garbage */
			WRITE_ONCE(r->head, op->op & 2 ? r->head + op->a % 70 :
				   (u32)op->a << 24 | op->c);
			continue;
		}
		memset(data, op->c, sizeof(data));
		before = *r;
		full = tail - before.head >= ENOKI_RING_ENTRIES;
		slot = tail % ENOKI_RING_ENTRIES;
		ok = enoki_hint_ring_put(r, &tail, &dropped, op->a, data, size);
		puts++;
		written += ok;
		CHECK(ok == !full);
		/* what the put may change, put back: the rest must be as it was */
		rest = *r;
		if (ok) {
			CHECK(r->tail == tail);
			e = &r->hint[slot];
			CHECK(e->pid == op->a && e->size == size);
			for (i = 0; i < ENOKI_HINT_MAX; i++)
				CHECK(e->data[i] == (i < size ? op->c : 0));
			rest.hint[slot] = before.hint[slot];
			rest.tail = before.tail;
		} else {
			CHECK(r->dropped == dropped);
			rest.dropped = before.dropped;
		}
		CHECK(memcmp(&rest, &before, sizeof(rest)) == 0);
	}
	CHECK(written + dropped == puts && tail == in->rev_tail + written);
	free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	_Alignas(8) uint8_t buf[FUZZ_SLOTS_AT + sizeof(((struct enoki_hint_ring *)0)->hint)] = { 0 };
	const struct fuzz_head *in = (const void *)buf;
	struct enoki_hint_ring *r;
	u32 head, tail;
	int k;

	memcpy(buf, data, len < sizeof(buf) ? len : sizeof(buf));
	/* exactly the ring, so that a read past it is ASan's to see */
	r = malloc(sizeof(*r));
	memset(r, 0, sizeof(*r));
	r->entries = ENOKI_RING_ENTRIES;
	memcpy(r->hint, buf + FUZZ_SLOTS_AT, sizeof(r->hint));
	bell.hint_size = in->hint_size % (ENOKI_HINT_MAX + 1);
	bell.gone = in->gone;
	head = in->head;
	for (k = 0; k < FUZZ_DOORBELLS; k++) {
		const struct fuzz_doorbell *b = &in->bell[k];

		tail = b->raw_tail & 1 ? b->tail : head + b->ahead % 80;
		doorbell(r, &head, tail);
	}
	free(r);
	reverse(in, (const void *)(buf + sizeof(*in)));
	return 0;
}
