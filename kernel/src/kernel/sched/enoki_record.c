// SPDX-License-Identifier: GPL-2.0
/*
 * Enoki-C record rings: while recording is on, every message with its
 * answer and every libEnoki lock event, for replay in userspace.
 *
 * Owns: one ring of 32-byte units (struct enoki_rec) per CPU,
 * enoki_recording and the global sequence counter. A record is a header
 * unit, and a message's is followed by the message (enoki.h); head and
 * tail count units and only ever move by whole records. The rings live
 * from a start until the trace has been read to its end with recording
 * off (or stop finds them empty). Events lost to a full ring leave a gap
 * record in their place, with the number lost, so that replay knows where
 * its trace has a hole.
 *
 * Locks: a ring has a single producer (its CPU, interrupts off) and a
 * single consumer (the debugfs trace reader); head and tail are published
 * with release/acquire pairs and producers never wait: a full ring counts
 * a drop. enoki_recording is published with release after the rings are
 * set up and read with acquire. enoki_record_mutex serialises start, stop
 * and the trace reader.
 *
 * May call: nothing else in Enoki-C. build_policy.c includes this file
 * before enoki.c, whose call path takes enoki_record_seq() and
 * enoki_record_msg() (whose upgrade, enoki_record_upgrade(), and whose
 * exit, enoki_record_exit()), and
 * enoki_sysfs.c, whose files use
 * enoki_record_set(), enoki_record_drops(), enoki_record_buffer_kib(),
 * enoki_record_resize() and enoki_trace_fops.
 */
#include <linux/debugfs.h>
#include <linux/percpu.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "enoki.h"

/* units per CPU's ring: a power of two, 8 MiB by default */
#define ENOKI_REC_ENTRIES_DEFAULT	BIT(18)
#define ENOKI_REC_ENTRIES_MIN		BIT(12)
#define ENOKI_REC_ENTRIES_MAX		BIT(22)

struct enoki_ring {
	struct enoki_rec *buf;
	u64 mask;	/* units - 1 */
	u64 head;	/* in units, written by the producer */
	u64 tail;	/* in units, written by the consumer */
	u64 drops;
	u64 lost;	/* drops not yet reported by a gap record */
	u64 lost_seq;	/* sequence number of the first of them */
};

/*
 * A call is recorded whole or not at all: enoki_record_calls decides at its
 * start (enoki_record_seq()) and enoki_rec_call remembers it for the lock
 * events inside. enoki_recording, which libEnoki tests before it reports a
 * lock event, is on from before the first recorded call starts until after
 * the last one ends.
 *
 * A call's records carry the time its message was made: timelines need no
 * finer grain, and so recording a lock event reads no clock.
 */
int enoki_recording;
EXPORT_SYMBOL_GPL(enoki_recording);
static int enoki_record_calls;
struct enoki_rec_call {
	bool on;	/* this CPU's current call is recorded */
	u64 time_ns;	/* its message's time */
};

static DEFINE_PER_CPU(struct enoki_rec_call, enoki_rec_call);
static atomic64_t enoki_seq = ATOMIC64_INIT(0);
static DEFINE_PER_CPU(struct enoki_ring, enoki_rings);
/* serialises record start/stop, resizing and trace readers */
static DEFINE_MUTEX(enoki_record_mutex);
/* ring units for the next start, under enoki_record_mutex */
static u32 enoki_rec_entries = ENOKI_REC_ENTRIES_DEFAULT;

/* the producers, on the call path and in libEnoki's locks */

/* What enoki_record_lock() takes, as bits 1 << type. */
#define ENOKI_REC_LOCK_TYPES						\
	(BIT(ENOKI_REC_LOCK_ACQUIRE) | BIT(ENOKI_REC_LOCK_ACQUIRE_SHARED) |	\
	 BIT(ENOKI_REC_LOCK_RELEASE) | BIT(ENOKI_REC_LOCK_ACCESS))

/* Units of the record whose header is @rec. */
static u64 enoki_rec_units(const struct enoki_rec *rec)
{
	return rec->type == ENOKI_REC_MSG ? ENOKI_REC_MSG_UNITS : 1;
}

static void enoki_ring_commit(struct enoki_ring *ring, u64 units)
{
	/* pairs with the reader's acquire: the record is complete */
	smp_store_release(&ring->head, ring->head + units);
}

static void enoki_rec_init(struct enoki_rec *rec, u64 seq, u32 type, u64 addr,
			   u64 time_ns)
{
	rec->seq = seq;
	rec->cpu = smp_processor_id();
	rec->type = type;
	rec->addr = addr;
	rec->time_ns = time_ns;
}

/* Writes @ring's gap record, numbered like the first lost event. */
static void enoki_ring_gap(struct enoki_ring *ring, int cpu)
{
	struct enoki_rec *rec = &ring->buf[ring->head & ring->mask];

	rec->seq = ring->lost_seq;
	rec->cpu = cpu;
	rec->type = ENOKI_REC_GAP;
	rec->addr = ring->lost;
	rec->time_ns = ktime_get_ns();
	enoki_ring_commit(ring, 1);
	ring->lost = 0;
}

/*
 * The header unit of this CPU's next record, numbered @seq and @units
 * long; NULL if the ring is full. If events were lost, a gap record goes
 * first, numbered like the first lost event: it stands where they would
 * have been. The last unit is kept for the gap record
 * enoki_record_stop() may have to write.
 */
static noinline struct enoki_rec *
enoki_ring_slot_slow(struct enoki_ring *ring, u64 seq, u64 units)
{
	u64 used;

	if (!ring->buf)
		return NULL;
	/* pairs with the reader's release: its units are free to reuse */
	used = ring->head - smp_load_acquire(&ring->tail);
	if (used + units + (ring->lost ? 1 : 0) > ring->mask) {
		ring->drops++;
		if (!ring->lost++)
			ring->lost_seq = seq;
		return NULL;
	}
	if (ring->lost)
		enoki_ring_gap(ring, smp_processor_id());
	return &ring->buf[ring->head & ring->mask];
}

/*
 * As enoki_ring_slot_slow(), inline for the common case of a ring that
 * has room and lost nothing: every lock event of a recorded call takes
 * this path.
 */
static __always_inline struct enoki_rec *enoki_ring_slot(u64 seq, u64 units)
{
	struct enoki_ring *ring = this_cpu_ptr(&enoki_rings);
	/* pairs with the reader's release: its units are free to reuse */
	u64 used = ring->head - smp_load_acquire(&ring->tail);

	if (unlikely(!ring->buf || ring->lost || used + units > ring->mask))
		return enoki_ring_slot_slow(ring, seq, units);
	return &ring->buf[ring->head & ring->mask];
}

/*
 * Sequence number of a message made at @time_ns, about to be handed over;
 * 0: not recording.
 */
static u64 enoki_record_seq(u64 time_ns)
{
	/* pairs with enoki_record_start(): the rings are ready */
	if (likely(!smp_load_acquire(&enoki_record_calls)))
		return 0;
	__this_cpu_write(enoki_rec_call.on, true);
	__this_cpu_write(enoki_rec_call.time_ns, time_ns);
	return atomic64_inc_return(&enoki_seq);
}

/* Copies @msg into the units after @ring's head, wrapping at its end. */
static void enoki_ring_put_msg(struct enoki_ring *ring,
			       const struct enoki_msg *msg)
{
	const size_t unit = sizeof(*ring->buf);
	u64 at = (ring->head + 1) & ring->mask;
	size_t room = (ring->mask + 1 - at) * unit;
	size_t first = min(sizeof(*msg), room);

	/*
	 * Word by word when it fits: memcpy() of a message costs twice the
	 * instructions, and recording pays it on every call.
	 */
	if (likely(first == sizeof(*msg))) {
		const u64 *src = (const u64 *)msg;
		u64 *dst = (u64 *)&ring->buf[at];
		size_t i;

		for (i = 0; i < sizeof(*msg) / sizeof(u64); i++)
			dst[i] = src[i];
		return;
	}
	memcpy(&ring->buf[at], msg, first);
	if (first < sizeof(*msg))
		memcpy(ring->buf, (const u8 *)msg + first,
		       sizeof(*msg) - first);
}

static void enoki_record_msg(u64 seq, const struct enoki_msg *msg)
{
	struct enoki_rec *rec = enoki_ring_slot(seq, ENOKI_REC_MSG_UNITS);
	struct enoki_ring *ring = this_cpu_ptr(&enoki_rings);

	__this_cpu_write(enoki_rec_call.on, false);
	if (!rec)
		return;
	enoki_rec_init(rec, seq, ENOKI_REC_MSG, 0, msg->now);
	enoki_ring_put_msg(ring, msg);
	enoki_ring_commit(ring, ENOKI_REC_MSG_UNITS);
}

/*
 * Marks a live upgrade in the trace, with every call held off: the records
 * before it are the running version's, those after it the new one's.
 * @state_fp is the fingerprint of the state carried over (0: none).
 */
static void enoki_record_upgrade(u64 state_fp)
{
	struct enoki_rec *rec;
	u64 now = ktime_get_ns();
	u64 seq = enoki_record_seq(now);

	if (!seq)
		return;
	__this_cpu_write(enoki_rec_call.on, false);
	rec = enoki_ring_slot(seq, 1);
	if (!rec)
		return;
	enoki_rec_init(rec, seq, ENOKI_REC_UPGRADE, state_fp, now);
	enoki_ring_commit(this_cpu_ptr(&enoki_rings), 1);
}

/*
 * Marks the end of the scheduler's run (an ejection, an unload): nothing
 * after it reached the scheduler, so replay ends here. @kind is sched_ext's
 * exit kind (enum scx_exit_kind). Called from sched_ext's disable worker
 * with every call held off, once no call can start: the run's last record.
 */
static void enoki_record_exit(u64 kind)
{
	struct enoki_rec *rec;
	unsigned long flags;
	u64 seq, now;

	/* the per-CPU call flag and ring need this CPU to stay put */
	local_irq_save(flags);
	now = ktime_get_ns();
	seq = enoki_record_seq(now);
	if (seq) {
		__this_cpu_write(enoki_rec_call.on, false);
		rec = enoki_ring_slot(seq, 1);
		if (rec) {
			enoki_rec_init(rec, seq, ENOKI_REC_EXIT, kind, now);
			enoki_ring_commit(this_cpu_ptr(&enoki_rings), 1);
		}
	}
	local_irq_restore(flags);
}

/**
 * enoki_record_lock - record a libEnoki lock event while recording
 * @addr: the lock's address (its identity in the trace)
 * @type: ENOKI_REC_LOCK_ACQUIRE, ENOKI_REC_LOCK_ACQUIRE_SHARED for a
 *        reader's (replay lets readers hold the lock together),
 *        ENOKI_REC_LOCK_RELEASE, or ENOKI_REC_LOCK_ACCESS for a lock taken
 *        and released with nothing else in between (one record where a
 *        pair would cost two)
 *
 * A recorded call runs with interrupts off from enoki_record_seq() to
 * enoki_record_msg(), so whatever the context, a CPU reads its own
 * enoki_rec_call.on true only inside such a call, where it stays on the
 * CPU.
 */
void enoki_record_lock(u64 addr, u32 type)
{
	struct enoki_rec *rec;
	u64 seq;

	/* pairs with enoki_record_start(): the rings are ready */
	if (!smp_load_acquire(&enoki_recording) ||
	    !raw_cpu_read(enoki_rec_call.on))
		return;
	if (WARN_ON_ONCE(type >= BITS_PER_LONG ||
			 !(BIT(type) & ENOKI_REC_LOCK_TYPES)))
		return;
	seq = atomic64_inc_return(&enoki_seq);
	rec = enoki_ring_slot(seq, 1);
	if (rec) {
		enoki_rec_init(rec, seq, type, addr,
			       __this_cpu_read(enoki_rec_call.time_ns));
		enoki_ring_commit(this_cpu_ptr(&enoki_rings), 1);
	}
}
EXPORT_SYMBOL_GPL(enoki_record_lock);

/* control, behind /sys/kernel/enoki/record and record_drops */

static bool enoki_rings_empty(void)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		struct enoki_ring *ring = per_cpu_ptr(&enoki_rings, cpu);

		if (ring->buf && ring->head != ring->tail)
			return false;
	}
	return true;
}

/* With recording off and nothing left to read, the rings go. */
static void enoki_rings_free_if_done(void)
{
	int cpu;

	if (READ_ONCE(enoki_recording) || !enoki_rings_empty())
		return;
	for_each_possible_cpu(cpu) {
		struct enoki_ring *ring = per_cpu_ptr(&enoki_rings, cpu);

		vfree(ring->buf);
		ring->buf = NULL;
	}
}

static void enoki_record_stop(void)
{
	int cpu;

	WRITE_ONCE(enoki_record_calls, 0);
	/* calls run with interrupts off: wait until every recorded one ended */
	synchronize_rcu();
	WRITE_ONCE(enoki_recording, 0);
	synchronize_rcu();
	/* what was lost since the last record goes in the slot kept for it */
	for_each_possible_cpu(cpu) {
		struct enoki_ring *ring = per_cpu_ptr(&enoki_rings, cpu);

		if (ring->buf && ring->lost)
			enoki_ring_gap(ring, cpu);
	}
	enoki_rings_free_if_done();
}

static int enoki_record_start(void)
{
	int cpu;

	enoki_record_stop();
	for_each_possible_cpu(cpu) {
		struct enoki_ring *ring = per_cpu_ptr(&enoki_rings, cpu);

		if (ring->buf && ring->mask + 1 != enoki_rec_entries) {
			vfree(ring->buf);
			ring->buf = NULL;
		}
		if (!ring->buf) {
			ring->buf = vmalloc_array(enoki_rec_entries,
						  sizeof(*ring->buf));
			if (!ring->buf)
				return -ENOMEM;
			ring->mask = enoki_rec_entries - 1;
		}
		ring->head = 0;
		ring->tail = 0;
		ring->drops = 0;
		ring->lost = 0;
	}
	atomic64_set(&enoki_seq, 0);
	/* both pair with the producers' acquire: the rings are ready */
	smp_store_release(&enoki_recording, 1);
	/* ... and lock events are taken before the first call is recorded */
	smp_store_release(&enoki_record_calls, 1);
	return 0;
}

/* Starts (@on) or stops recording; 0 or -ENOMEM. */
static int enoki_record_set(bool on)
{
	int ret = 0;

	mutex_lock(&enoki_record_mutex);
	if (on)
		ret = enoki_record_start();
	else
		enoki_record_stop();
	mutex_unlock(&enoki_record_mutex);
	return ret;
}

/* Size of each CPU's ring, in KiB, from the next start on. */
static u32 enoki_record_buffer_kib(void)
{
	return (u64)READ_ONCE(enoki_rec_entries) * sizeof(struct enoki_rec) /
	       SZ_1K;
}

/*
 * Sizes the rings of the next start: as many units as fit in @kib KiB per
 * CPU, rounded down to a power of two within the limits; -EBUSY while
 * recording.
 */
static int enoki_record_resize(u64 kib)
{
	u64 entries;
	int ret = 0;

	/* a size past the largest is the largest, not a wrapped product */
	kib = min_t(u64, kib, ENOKI_REC_ENTRIES_MAX);
	entries = kib * SZ_1K / sizeof(struct enoki_rec);
	entries = clamp_t(u64, entries, ENOKI_REC_ENTRIES_MIN,
			  ENOKI_REC_ENTRIES_MAX);
	mutex_lock(&enoki_record_mutex);
	if (READ_ONCE(enoki_recording))
		ret = -EBUSY;
	else
		WRITE_ONCE(enoki_rec_entries, rounddown_pow_of_two(entries));
	mutex_unlock(&enoki_record_mutex);
	return ret;
}

/* Events lost to full rings since the last start. */
static u64 enoki_record_drops(void)
{
	u64 drops = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		drops += READ_ONCE(per_cpu_ptr(&enoki_rings, cpu)->drops);
	return drops;
}

/*
 * Units of @ring's whole records from @tail on, before @head, that fit in
 * @room units: all of them, unless a message would be cut.
 */
static u64 enoki_ring_whole(struct enoki_ring *ring, u64 tail, u64 head,
			    u64 room)
{
	u64 end = tail;

	if (head - tail <= room)
		return head - tail;
	while (end != head) {
		u64 units = enoki_rec_units(&ring->buf[end & ring->mask]);

		if (end + units - tail > room)
			break;
		end += units;
	}
	return end - tail;
}

/*
 * Copies whole records from @ring to @ubuf, at most @max bytes' worth, and
 * frees their units; the bytes copied, or -EFAULT (and nothing freed). The
 * ring wraps once at most, so that is two copies at most.
 */
static ssize_t enoki_ring_read(struct enoki_ring *ring, char __user *ubuf,
			       size_t max)
{
	const size_t size = sizeof(struct enoki_rec);
	u64 tail = ring->tail;
	/* pairs with enoki_ring_commit(): whole records only */
	u64 head = smp_load_acquire(&ring->head);
	u64 n = enoki_ring_whole(ring, tail, head, max / size);
	u64 first = tail & ring->mask;
	u64 run = min_t(u64, n, ring->mask + 1 - first);

	if (copy_to_user(ubuf, &ring->buf[first], run * size))
		return -EFAULT;
	if (run < n && copy_to_user(ubuf + run * size, ring->buf,
				    (n - run) * size))
		return -EFAULT;
	/* the producer may reuse the units once it sees this */
	smp_store_release(&ring->tail, tail + n);
	return n * size;
}

/*
 * The consumer, debugfs enoki/trace: moves whole records from the CPUs'
 * rings to userspace, any order. A read of at least a message's bytes
 * returns 0 only once the rings are empty.
 */
static ssize_t enoki_trace_read(struct file *file, char __user *ubuf,
				size_t count, loff_t *ppos)
{
	size_t done = 0;
	ssize_t got;
	int cpu;

	mutex_lock(&enoki_record_mutex);
	for_each_possible_cpu(cpu) {
		struct enoki_ring *ring = per_cpu_ptr(&enoki_rings, cpu);

		if (!ring->buf)
			continue;
		got = enoki_ring_read(ring, ubuf + done, count - done);
		if (got < 0) {
			mutex_unlock(&enoki_record_mutex);
			return done ?: got;
		}
		done += got;
	}
	if (!done)
		enoki_rings_free_if_done();
	mutex_unlock(&enoki_record_mutex);
	*ppos += done;
	return done;
}

static const struct file_operations enoki_trace_fops = {
	.owner	= THIS_MODULE,
	.read	= enoki_trace_read,
	.llseek	= noop_llseek,
};
