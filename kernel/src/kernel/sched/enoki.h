/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Enoki-C message ABI, shared with scheduler modules built on libEnoki.
 * This header is the one source: enoki/src/abi.rs mirrors it in Rust and
 * enoki/abi-check holds the two together (bindgen). Bump ENOKI_ABI_VERSION
 * on any change.
 */
#ifndef _KERNEL_SCHED_ENOKI_H
#define _KERNEL_SCHED_ENOKI_H

#include <linux/build_bug.h>
#include <linux/types.h>

#define ENOKI_ABI_VERSION	10
#define ENOKI_MAX_CPUS		256
#define ENOKI_MAX_NODES		8
#define ENOKI_CPUMASK_WORDS	(ENOKI_MAX_CPUS / 64)
#define ENOKI_NAME_LEN		32
/* time slices Enoki-C applies, whatever a module asks for */
#define ENOKI_SLICE_MIN_NS	50000ULL	/* 50 us */
#define ENOKI_SLICE_MAX_NS	1000000000ULL	/* 1 s */

enum enoki_msg_kind {
	ENOKI_TASK_NEW = 1,
	ENOKI_TASK_WAKEUP,
	ENOKI_TASK_PREEMPT,
	ENOKI_TASK_BLOCKED,
	ENOKI_TASK_DEAD,
	ENOKI_TASK_TICK,
	ENOKI_SELECT_TASK_RQ,
	ENOKI_PICK_NEXT_TASK,
	ENOKI_PNT_ERR,
	ENOKI_BALANCE,
	ENOKI_BALANCE_ERR,
	ENOKI_MIGRATE_TASK_RQ,
	ENOKI_TASK_PRIO_CHANGED,
	ENOKI_TASK_AFFINITY_CHANGED,
	ENOKI_CPU_ONLINE,
	ENOKI_CPU_OFFLINE,
	ENOKI_CGROUP_NEW,
	ENOKI_CGROUP_GONE,
	ENOKI_CGROUP_WEIGHT,
	ENOKI_TASK_CGROUP_MOVED,
	ENOKI_CGROUP_BANDWIDTH,
	ENOKI_QUEUE_NEW,
	ENOKI_HINT,
	ENOKI_QUEUE_GONE,
	ENOKI_MSG_NR,
};
static_assert(ENOKI_MSG_NR <= 32);

/*
 * Optional messages, one bit (1 << kind) each: a scheduler names in
 * enoki_sched_ops.handles those it takes, and Enoki-C sends it no other
 * (it then does what it does with no scheduler: the previous CPU for a
 * wakeup, no preemption at a tick, no pull, no cgroups). BALANCE,
 * BALANCE_ERR and MIGRATE_TASK_RQ go together: all three or none; so do
 * the five cgroup messages, and the three hint-queue messages.
 */
#define ENOKI_MSGS_OPTIONAL	0x1fffcc0U
static_assert(ENOKI_MSGS_OPTIONAL ==
	      ((1U << ENOKI_TASK_TICK) | (1U << ENOKI_SELECT_TASK_RQ) |
	       (1U << ENOKI_BALANCE) | (1U << ENOKI_BALANCE_ERR) |
	       (1U << ENOKI_MIGRATE_TASK_RQ) | (1U << ENOKI_TASK_PRIO_CHANGED) |
	       (1U << ENOKI_TASK_AFFINITY_CHANGED) | (1U << ENOKI_CPU_ONLINE) |
	       (1U << ENOKI_CPU_OFFLINE) | (1U << ENOKI_CGROUP_NEW) |
	       (1U << ENOKI_CGROUP_GONE) | (1U << ENOKI_CGROUP_WEIGHT) |
	       (1U << ENOKI_TASK_CGROUP_MOVED) |
	       (1U << ENOKI_CGROUP_BANDWIDTH) | (1U << ENOKI_QUEUE_NEW) |
	       (1U << ENOKI_HINT) | (1U << ENOKI_QUEUE_GONE)));

/* enoki_msg.flags */
#define ENOKI_F_YIELD		(1U << 0)
#define ENOKI_F_SLEEP		(1U << 1)
#define ENOKI_F_HAS_PREV	(1U << 2)
#define ENOKI_F_PREV_RUNNABLE	(1U << 3)
#define ENOKI_F_NEW		(1U << 4)
/* answer to PICK_NEXT_TASK: keep running the previous task (ret = its pid) */
#define ENOKI_F_KEEP_PREV	(1U << 5)
/* SELECT_TASK_RQ: a sync wakeup (the waker is about to sleep) */
#define ENOKI_F_WAKE_SYNC	(1U << 6)

/* error codes in enoki_msg.flags of PNT_ERR and BALANCE_ERR */
#define ENOKI_ERR_WRONG_CPU	1
#define ENOKI_ERR_NOT_QUEUED	2
#define ENOKI_ERR_AFFINITY	3
#define ENOKI_ERR_NO_TASK	4

/* enoki_msg.ret_err: mistakes libEnoki caught in the module */
#define ENOKI_RET_WRONG_CPU	(1U << 0)
#define ENOKI_RET_BAD_MIGRATE	(1U << 1)
#define ENOKI_RET_BAD_SELECT	(1U << 2)
#define ENOKI_RET_FAILED	(1U << 3)

#define ENOKI_MODE_ALL		0
#define ENOKI_MODE_OPT_IN	1

#define ENOKI_KICK_RESCHED	0
#define ENOKI_KICK_PREEMPT	1

/*
 * One call into the scheduler and its answer; plain data, recordable.
 * A task is named by @pid and @generation together: @generation is unique
 * to the task while it is in Enoki, so a reused pid is a different task.
 * A cgroup is named by its id (cgroup_id(), the root's is 1): @cgroup is
 * the task's where @weight is the task's, or the cgroup a CGROUP_* message
 * is about, whose cpu.weight (1..10000) is then @weight. @now is when
 * the call was made (CLOCK_MONOTONIC): the scheduler's only clock, so that
 * a replay sees the times the recorded run saw.
 *
 * Hint queues: QUEUE_NEW and QUEUE_GONE name the queue in @queue and, for
 * QUEUE_NEW, its owner in @pid and @tgid. HINT names the queue, the task
 * the hint is about (@pid, @tgid, @generation, @task_cpu) and carries the
 * hint's @hint_size bytes in @allowed, checked against the scheduler's
 * hint size before the call.
 */
struct enoki_msg {
	u32 kind;
	u32 flags;
	s32 cpu;
	s32 pid;
	s32 tgid;
	s32 task_cpu;
	u64 runtime;
	u32 weight;
	s32 nice;
	u64 allowed[ENOKI_CPUMASK_WORDS];
	s64 ret;
	s32 ret_cpu;
	u32 ret_err;
	u64 ret_slice;
	u64 generation;
	u64 cgroup;
	u64 cgroup_parent;	/* CGROUP_NEW: its parent's id (0: none) */
	u64 now;
	/* CGROUP_NEW, CGROUP_BANDWIDTH: cpu.max and cpu.max.burst, ns */
	u64 cgroup_period;
	u64 cgroup_quota;	/* per period; U64_MAX: no limit */
	u64 cgroup_burst;
	u32 queue;
	u32 hint_size;
};
static_assert(sizeof(struct enoki_msg) == 160);

struct enoki_cpu_topo {
	s32 core;
	s32 llc;
	s32 node;
	s32 package;
};

struct enoki_topology {
	u32 nr_cpus;
	u32 nr_nodes;
	struct enoki_cpu_topo cpus[ENOKI_MAX_CPUS];
	u8 distance[ENOKI_MAX_NODES][ENOKI_MAX_NODES];
};

/*
 * Record: per-CPU rings of 32-byte units. Every record is a struct
 * enoki_rec, one unit; a message's is followed by its struct enoki_msg,
 * ENOKI_REC_MSG_UNITS in all. Lock events, most records, carry nothing
 * more, so they take one unit where a message takes six.
 */
enum enoki_rec_type {
	ENOKI_REC_MSG = 1,		/* then the call's enoki_msg, answered */
	ENOKI_REC_LOCK_ACQUIRE,		/* @addr: a libEnoki lock was taken */
	ENOKI_REC_LOCK_RELEASE,		/* @addr: ... and released */
	ENOKI_REC_GAP,			/* @addr events of this CPU were lost, from @seq on */
	ENOKI_REC_UPGRADE,		/* live upgrade; @addr: state fingerprint carried, or 0 */
	ENOKI_REC_EXIT,			/* the scheduler left; @addr: sched_ext's exit kind */
	ENOKI_REC_LOCK_ACCESS,		/* @addr: taken and released at once */
	ENOKI_REC_LOCK_ACQUIRE_SHARED,	/* @addr: taken to read, beside other readers */
};

struct enoki_rec {
	u64 seq;	/* global order; a message's seq is taken before the call */
	u32 cpu;
	u32 type;
	u64 addr;
	u64 time_ns;	/* CLOCK_MONOTONIC, its call's; for timelines only */
};
static_assert(sizeof(struct enoki_rec) == 32);
static_assert(sizeof(struct enoki_msg) % sizeof(struct enoki_rec) == 0);
#define ENOKI_REC_MSG_UNITS \
	(1 + sizeof(struct enoki_msg) / sizeof(struct enoki_rec))

struct module;

struct enoki_sched_ops {
	u32 abi_version;
	u32 mode;
	u64 slice_ns;
	u32 timeout_ms;
	u32 handles;	/* ENOKI_MSGS_OPTIONAL bits the scheduler takes */
	char name[ENOKI_NAME_LEN];
	struct module *owner;
	const void *sched;
	s64 (*process)(const void *sched, struct enoki_msg *msg);
	/*
	 * Live upgrade. @state_fp: what the scheduler's upgrade state is (0:
	 * it has none); versions hand state over only when theirs match.
	 * @state: room for the state this version starts from, or NULL.
	 * export_state() writes the running version's state into the next
	 * version's @state; adopt_state() starts the next version from it.
	 * Both return 0 or -errno and run twice: first while the running
	 * version still takes calls (a pre-copy, so that the second pass
	 * finds both versions' code and data warm), then with every call
	 * held off; the next version starts from the second.
	 */
	u64 state_fp;
	void *state;
	int (*export_state)(const void *sched, void *state);
	int (*adopt_state)(const void *sched, const void *state);
	/*
	 * Hints: @hint_size bytes each (at most the size of
	 * enoki_msg.allowed); @hint_fp names their type, so that a queue
	 * outlives an upgrade only to a version that reads its hints the
	 * same way. Reverse hints, which the scheduler sends with
	 * enoki_send_rev_hint(), likewise.
	 */
	u64 hint_fp;
	u32 hint_size;
	u32 rev_hint_size;
	u64 rev_hint_fp;
};
static_assert(offsetof(struct enoki_sched_ops, process) == 72);
static_assert(offsetof(struct enoki_sched_ops, adopt_state) == 104);
static_assert(sizeof(struct enoki_sched_ops) == 136);

int enoki_register(const struct enoki_sched_ops *ops);
int enoki_upgrade(const struct enoki_sched_ops *ops, bool fresh);
void enoki_unregister(const struct enoki_sched_ops *ops);
int enoki_get_topology(struct enoki_topology *topo);
void enoki_kick_cpu(int cpu, u32 flags);
void enoki_set_timer(int cpu, u64 ns);
void enoki_cancel_timer(int cpu);
void enoki_log(int level, const char *msg, size_t len);
int enoki_this_cpu(void);
u64 enoki_clock_ns(void);
void enoki_fail(const char *report, size_t len);
void enoki_send_rev_hint(u32 queue, s32 pid, const void *hint, u32 size);

/* The C FIFO baseline (enoki_cfifo.c), loaded by enoki_cfifo.ko. */
int enoki_cfifo_register(struct module *owner, u32 mode, u64 slice_ns,
			 u32 timeout_ms);
void enoki_cfifo_unregister(void);

/*
 * Non-zero while recording, published with release once the rings are
 * ready; libEnoki reads it with acquire before enoki_record_lock(), whose
 * @type is ENOKI_REC_LOCK_ACQUIRE, _ACQUIRE_SHARED (a reader's, which other
 * readers may hold at once), _RELEASE or _ACCESS (a libEnoki shared value:
 * its lock held only while the value is read or written).
 */
extern int enoki_recording;
void enoki_record_lock(u64 addr, u32 type);

#endif /* _KERNEL_SCHED_ENOKI_H */
