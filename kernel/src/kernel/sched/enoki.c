// SPDX-License-Identifier: GPL-2.0
/*
 * Enoki-C: run CPU schedulers written in safe Rust (libEnoki) as loadable
 * modules, as an in-kernel client of sched_ext.
 *
 * Every sched_ext operation becomes one synchronous message (struct
 * enoki_msg) handed to the module's process() under this CPU's call lock.
 * Enoki-C accounts task runtime itself and passes it in the messages, checks
 * every decision the module makes before applying it through sched_ext, and
 * lets sched_ext handle migration, bypass, the stall watchdog and ejection.
 *
 * This file: the call path (a sched_ext operation, its message, the check
 * of the answer), registration and the scheduler's state, and the services
 * scheduler modules call (kick, timer, log, topology).
 *
 * Owns: the loaded scheduler (enoki), its per-CPU counters, call locks,
 * preemption timers and yield marks, and each task's Enoki identity
 * (p->scx.enoki_pid and enoki_gen, set when the task enters Enoki).
 *
 * Locks, outermost first:
 *   enoki_mutex           register, upgrade and unregister (sleeps; never
 *                         on the call path)
 *   enoki_queues_rwsem    hint queues (enoki_hints.c): hints read it,
 *                         register and upgrade write it
 *   scx_fork_rwsem        sched_ext's; an upgrade holds it for writing so
 *                         that no new task is enabled but not yet listed
 *   scx_tasks_lock        sched_ext's task list: an upgrade walks it, first
 *                         with calls going on, then with every call held
 *                         off (sched_ext takes it before rq locks, and no
 *                         call takes it)
 *   rq lock / p->pi_lock  held by sched_ext around most operations
 *   enoki_call_lock       this CPU's, around every call into the module:
 *                         a "big reader" lock of per-CPU arch spinlocks
 *                         (legal under the raw rq lock with interrupts
 *                         off, never sleeps, even on PREEMPT_RT); whoever
 *                         changes enoki.ops takes every CPU's (enoki_quiesce())
 *                         so that no call is in flight or can start
 *   module locks          libEnoki's spin locks, inside process(), and
 *                         in an upgrade's state export (under
 *                         scx_tasks_lock, also while calls go on: a call
 *                         holding one never waits for scx_tasks_lock)
 *   hrtimer base lock     enoki_set_timer() from inside process()
 *   enoki_status_lock     state, last_exit and the exit dump; a leaf, also
 *                         taken by sched_ext's disable worker and the sysfs
 *                         readers
 * Lockdep sees the call locks as one lock class (enoki_call_map): shared on
 * the call path, exclusive in enoki_quiesce().
 *
 * May call: sched_ext internals and the record producer (enoki_record.c).
 * build_policy.c includes enoki_record.c, this file and enoki_sysfs.c in
 * that order right after ext.c, so each file uses what the ones before it
 * define.
 */
#include <linux/hrtimer.h>
#include <linux/module.h>
#include <linux/pid_namespace.h>
#include <linux/sort.h>

#include "enoki.h"

/* picks (and wrong picks) tried per dispatch before giving the CPU away */
#define ENOKI_PICK_TRIES	4
/* sched_ext's reason, ": ", and its message (a libEnoki fault report) */
#define ENOKI_EXIT_LEN		(32 + SCX_EXIT_MSG_LEN)
/* sched_ext's state dump kept after an exit, for debugfs enoki/exit_dump */
#define ENOKI_EXIT_DUMP_LEN	(32 * 1024)
/* tasks the module refused wait here; drained when it has nothing to run */
#define ENOKI_DSQ_REFUSED	1
/* ...and every this many dispatches ahead of it, so they cannot starve */
#define ENOKI_REFUSED_EVERY	8

/* What /sys/kernel/enoki/state says. */
enum enoki_state {
	ENOKI_NONE,	/* no scheduler */
	ENOKI_ENABLED,	/* scheduling */
	ENOKI_EXITED,	/* sched_ext ended it cleanly (sysrq-S, kernel) */
	ENOKI_EJECTED,	/* sched_ext ejected it for an error or a stall */
};

struct enoki_stats {
	u64 msgs[ENOKI_MSG_NR];
	u64 pick_errors;
	u64 balance_errors;
	u64 select_errors;
	u64 migrate_errors;
	u64 rejected;
	u64 dispatches;
	u64 timer_preempts;	/* preemption timers that fired */
};

struct enoki_timer {
	struct hrtimer timer;
	int cpu;
};

static struct {
	/* read under this CPU's call lock, written under all of them */
	const struct enoki_sched_ops *ops;	/* NULL: none loaded */
	/* a scheduler with no messages (enoki_register_native()), or NULL */
	const struct sched_ext_ops *native;
	char name[ENOKI_NAME_LEN];
	char module[MODULE_NAME_LEN];
	u32 mode;
	u64 slice_ns;
	/* live upgrades, under enoki_mutex */
	u64 upgrades;
	u64 blackout_last_ns;	/* calls held off by the last upgrade */
	u64 blackout_max_ns;
	/* under enoki_status_lock */
	enum enoki_state state;
	char last_exit[ENOKI_EXIT_LEN];
	size_t exit_dump_len;	/* of enoki_exit_dump */
} enoki;
static char enoki_exit_dump[ENOKI_EXIT_DUMP_LEN];

static DEFINE_PER_CPU(arch_spinlock_t, enoki_call_lock) =
	__ARCH_SPIN_LOCK_UNLOCKED;
static struct lock_class_key enoki_call_key;
static struct lockdep_map enoki_call_map;
/* serialises register and unregister, and sysfs readers against them */
static DEFINE_MUTEX(enoki_mutex);
static DEFINE_SPINLOCK(enoki_status_lock);
static DEFINE_PER_CPU(struct enoki_stats, enoki_stats);
static DEFINE_PER_CPU(struct enoki_timer, enoki_timers);
/* task that called sched_yield() on this CPU, until it is enqueued */
static DEFINE_PER_CPU(struct task_struct *, enoki_yielding);

/*
 * The task this CPU's last pick put in sched_ext's dispatch buffer, until
 * its next dispatch: still QUEUED for a moment, but no longer the
 * module's (an upgrade must not hand it to the next version). Compared,
 * never dereferenced; @gen tells a new task at the same address apart.
 */
struct enoki_dispatched {
	struct task_struct *p;
	unsigned long qseq;
	u64 gen;
};

static DEFINE_PER_CPU(struct enoki_dispatched, enoki_dispatched);
/*
 * ENOKI_DSQ_REFUSED, looked up once at init: scx_bpf_consume() hashes the
 * id, and every empty dispatch would pay for that on a queue that is
 * almost always empty. Valid while the scheduler is enabled, the only time
 * its callbacks run (sched_ext frees user DSQs after disabling it).
 */
static struct scx_dispatch_q *enoki_refused;
static atomic_t enoki_nr_tasks = ATOMIC_INIT(0);
static atomic64_t enoki_gen_seq = ATOMIC64_INIT(0);

/*
 * While an upgrade introduces every task to the next version, calls still
 * go to the running one; those that change which tasks there are, a
 * task's weight or CPUs, or which CPUs are online, are logged here for
 * the next version, which gets them once every call is held off. @on is
 * read under a call lock; the log is read with every call lock held.
 */
#define ENOKI_INTRO_LOG		64
static struct {
	bool on;
	atomic_t nr;	/* calls logged, or that would have been */
	struct enoki_msg msgs[ENOKI_INTRO_LOG];
} enoki_intro;

/*
 * The tasks that may be waiting in the running version when an upgrade
 * holds calls off: those sched_ext had queued with it (or was queueing)
 * when the upgrade looked, and those it was asked to queue since. Only
 * they are offered to the next version then, instead of every task;
 * more than the list holds, and every task is looked at. A task may be
 * listed twice. Listed tasks stay valid: the upgrade holds scx_tasks_lock,
 * without which none leaves sched_ext.
 */
#define ENOKI_WAITING_LOG	256
static struct {
	atomic_t nr;	/* listed, or that would have been */
	struct task_struct *tasks[ENOKI_WAITING_LOG];
} enoki_waiting;

/* hint queues, enoki_hints.c */
static void enoki_queues_retire(void);
static int enoki_queues_upgrade_begin(const struct enoki_sched_ops *old,
				      const struct enoki_sched_ops *ops);
static void enoki_queues_upgrade_end(const struct enoki_sched_ops *old,
				     const struct enoki_sched_ops *ops,
				     bool done);

/* Takes every CPU's call lock: no call into the module is in flight. */
static void enoki_quiesce(unsigned long *flags)
{
	int cpu;

	local_irq_save(*flags);
	lock_acquire_exclusive(&enoki_call_map, 0, 0, NULL, _RET_IP_);
	for_each_possible_cpu(cpu)
		arch_spin_lock(per_cpu_ptr(&enoki_call_lock, cpu));
}

static void enoki_unquiesce(unsigned long *flags)
{
	int cpu;

	for_each_possible_cpu(cpu)
		arch_spin_unlock(per_cpu_ptr(&enoki_call_lock, cpu));
	lock_release(&enoki_call_map, _RET_IP_);
	local_irq_restore(*flags);
}

/* Points the call path at @ops (NULL: none) once no call is in flight. */
static void enoki_set_ops(const struct enoki_sched_ops *ops)
{
	unsigned long flags;

	enoki_quiesce(&flags);
	WRITE_ONCE(enoki.ops, ops);
	enoki_unquiesce(&flags);
}

static void enoki_set_state(enum enoki_state state)
{
	spin_lock_irq(&enoki_status_lock);
	enoki.state = state;
	spin_unlock_irq(&enoki_status_lock);
}

static u64 enoki_clamp_slice(u64 ns)
{
	return clamp_t(u64, ns, ENOKI_SLICE_MIN_NS, ENOKI_SLICE_MAX_NS);
}

static void enoki_msg_init(struct enoki_msg *msg, u32 kind, int cpu)
{
	memset(msg, 0, sizeof(*msg));
	msg->kind = kind;
	msg->cpu = cpu;
	msg->pid = -1;
	msg->tgid = -1;
	msg->task_cpu = -1;
	msg->ret = -1;
	msg->ret_cpu = -1;
	msg->now = ktime_get_mono_fast_ns();
}

/* Under a call lock: logs @msg if the next version must hear of it too. */
static void enoki_intro_log(const struct enoki_msg *msg)
{
	int i;

	switch (msg->kind) {
	case ENOKI_TASK_NEW:
	case ENOKI_TASK_DEAD:
	case ENOKI_TASK_PRIO_CHANGED:
	case ENOKI_TASK_AFFINITY_CHANGED:
	case ENOKI_CPU_ONLINE:
	case ENOKI_CPU_OFFLINE:
	case ENOKI_CGROUP_NEW:
	case ENOKI_CGROUP_GONE:
	case ENOKI_CGROUP_WEIGHT:
	case ENOKI_TASK_CGROUP_MOVED:
	case ENOKI_CGROUP_BANDWIDTH:
		i = atomic_fetch_inc(&enoki_intro.nr);
		if (i < ENOKI_INTRO_LOG)
			enoki_intro.msgs[i] = *msg;
		break;
	}
}

/* @p may be waiting in the running version when the upgrade looks. */
static void enoki_waiting_log(struct task_struct *p)
{
	int i = atomic_fetch_inc(&enoki_waiting.nr);

	if (i < ENOKI_WAITING_LOG)
		enoki_waiting.tasks[i] = p;
}

/* enoki_call_apply() callback of an enqueue: lists @p during an upgrade. */
static void enoki_enqueued(struct enoki_msg *msg, void *p)
{
	if (unlikely(READ_ONCE(enoki_intro.on)))
		enoki_waiting_log(p);
}

/* Whether @ops takes messages of @kind: it may do without optional ones. */
static bool enoki_handles(const struct enoki_sched_ops *ops, u32 kind)
{
	u32 bit = 1U << kind;

	return !(ENOKI_MSGS_OPTIONAL & bit) || (ops->handles & bit);
}

/*
 * Hands @msg to the loaded scheduler and, if there is one, calls
 * @apply(@msg, @arg) still under the call lock, to act on the answer
 * before an upgrade can look; false if there is no scheduler or it does
 * without @msg's kind.
 */
static bool enoki_call_apply(struct enoki_msg *msg,
			     void (*apply)(struct enoki_msg *msg, void *arg),
			     void *arg)
{
	const struct enoki_sched_ops *ops;
	struct enoki_stats *stats;
	arch_spinlock_t *lock;
	unsigned long flags;
	bool taken;
	u64 seq = 0;

	local_irq_save(flags);
	lock = this_cpu_ptr(&enoki_call_lock);
	lock_acquire_shared(&enoki_call_map, 0, 0, NULL, _RET_IP_);
	arch_spin_lock(lock);
	ops = READ_ONCE(enoki.ops);
	taken = ops && enoki_handles(ops, msg->kind);
	if (taken) {
		seq = enoki_record_seq(msg->now);
		ops->process(ops->sched, msg);
		if (apply)
			apply(msg, arg);
		if (unlikely(seq))
			enoki_record_msg(seq, msg);
	}
	/* the next version may take what this one does without */
	if (ops && unlikely(READ_ONCE(enoki_intro.on)))
		enoki_intro_log(msg);
	arch_spin_unlock(lock);
	lock_release(&enoki_call_map, _RET_IP_);
	local_irq_restore(flags);
	if (!taken)
		return false;

	stats = this_cpu_ptr(&enoki_stats);
	if (msg->kind < ENOKI_MSG_NR)
		stats->msgs[msg->kind]++;
	if (msg->ret_err & ENOKI_RET_WRONG_CPU)
		stats->pick_errors++;
	if (msg->ret_err & ENOKI_RET_BAD_SELECT)
		stats->select_errors++;
	if (msg->ret_err & ENOKI_RET_BAD_MIGRATE)
		stats->migrate_errors++;
	return true;
}

/* Hands @msg to the loaded scheduler; false if it was not called. */
static bool enoki_call(struct enoki_msg *msg)
{
	return enoki_call_apply(msg, NULL, NULL);
}

/* enoki_call() from process context, which may sleep around it. */
static bool enoki_call_from_process(struct enoki_msg *msg)
{
	bool taken;

	preempt_disable();
	msg->cpu = smp_processor_id();
	taken = enoki_call(msg);
	preempt_enable();
	return taken;
}

#ifdef CONFIG_EXT_GROUP_SCHED
/* @p's cgroup; under its rq lock, p->pi_lock or rcu_read_lock() */
static u64 enoki_task_cgroup(struct task_struct *p)
{
	return cgroup_id(tg_cgrp(task_group(p)));
}
#else
static u64 enoki_task_cgroup(struct task_struct *p)
{
	return 1;
}
#endif

/* Fills in what the scheduler knows about @p. */
static void enoki_msg_fill(struct enoki_msg *msg, struct task_struct *p)
{
	unsigned int cpu;

	msg->pid = p->scx.enoki_pid;
	msg->cgroup = enoki_task_cgroup(p);
	msg->generation = p->scx.enoki_gen;
	msg->tgid = p->tgid;
	msg->runtime = p->se.sum_exec_runtime;
	msg->weight = sched_prio_to_weight[p->static_prio - MAX_RT_PRIO];
	msg->nice = task_nice(p);
	for_each_cpu(cpu, p->cpus_ptr) {
		if (cpu >= ENOKI_MAX_CPUS)
			break;
		msg->allowed[cpu / 64] |= 1ULL << (cpu % 64);
	}
}

/* Gives @p a fresh identity and introduces it to the scheduler. */
static void enoki_task_new(struct task_struct *p)
{
	struct enoki_msg msg;

	p->scx.enoki_pid = p->pid;
	p->scx.enoki_gen = atomic64_inc_return(&enoki_gen_seq);
	enoki_msg_init(&msg, ENOKI_TASK_NEW, smp_processor_id());
	enoki_msg_fill(&msg, p);
	msg.task_cpu = task_cpu(p);
	if (enoki_call(&msg) && msg.ret < 0)
		this_cpu_inc(enoki_stats.rejected);
}

/* Tells the scheduler @p (as it knows it) is gone. */
static void enoki_task_dead(struct task_struct *p)
{
	struct enoki_msg msg;

	enoki_msg_init(&msg, ENOKI_TASK_DEAD, smp_processor_id());
	msg.pid = p->scx.enoki_pid;
	msg.generation = p->scx.enoki_gen;
	msg.runtime = p->se.sum_exec_runtime;
	enoki_call(&msg);
}

/*
 * Names @p in @msg. de_thread() gives an exec'ing thread its group
 * leader's pid while the old leader, holding the thread's pid, waits to
 * be reaped: to the scheduler the thread is then a new task.
 */
static void enoki_msg_task(struct enoki_msg *msg, struct task_struct *p)
{
	if (unlikely(p->scx.enoki_pid != p->pid)) {
		enoki_task_dead(p);
		enoki_task_new(p);
	}
	enoki_msg_fill(msg, p);
}

/*
 * Can @p be dispatched to @cpu now? 0 or an ENOKI_ERR_* code.
 *
 * A task still QUEUEING is waiting too: its ops.enqueue() on another CPU
 * has handed the module the token being used here and has not returned
 * yet. sched_ext's finish_dispatch() waits for it to become QUEUED.
 * Calling such a task not queued would lose it: the module dropped its
 * token, and the wakeup that would bring a fresh one is this one.
 */
static int enoki_check_task(struct task_struct *p, int cpu)
{
	unsigned long opss;

	if (p->sched_class != &ext_sched_class)
		return ENOKI_ERR_NOT_QUEUED;
	opss = atomic_long_read(&p->scx.ops_state) & SCX_OPSS_STATE_MASK;
	if (opss != SCX_OPSS_QUEUED && opss != SCX_OPSS_QUEUEING)
		return ENOKI_ERR_NOT_QUEUED;
	if (!cpumask_test_cpu(cpu, p->cpus_ptr))
		return ENOKI_ERR_AFFINITY;
	if (is_migration_disabled(p) && task_cpu(p) != cpu)
		return ENOKI_ERR_AFFINITY;
	return 0;
}

/*
 * Tells the scheduler its pick or balance answer for @pid failed with
 * @err. @token_cpu is where the task's token is still good, or -1 when no
 * token for it can ever work (the task is gone, running, sleeping or
 * being dequeued: a fresh token comes with its next wakeup or preemption).
 */
static void enoki_send_err(u32 kind, int cpu, s32 pid, s32 token_cpu, int err)
{
	struct enoki_msg msg;

	enoki_msg_init(&msg, kind, cpu);
	msg.pid = pid;
	msg.task_cpu = token_cpu;
	msg.flags = err;
	enoki_call(&msg);
	if (kind == ENOKI_PNT_ERR)
		this_cpu_inc(enoki_stats.pick_errors);
	else
		this_cpu_inc(enoki_stats.balance_errors);
}

static s32 enoki_op_select_cpu(struct task_struct *p, s32 prev_cpu,
			       u64 wake_flags)
{
	struct enoki_msg msg;
	int cpu;

	enoki_msg_init(&msg, ENOKI_SELECT_TASK_RQ, smp_processor_id());
	enoki_msg_task(&msg, p);
	msg.task_cpu = prev_cpu;
	msg.flags = wake_flags & SCX_WAKE_SYNC ? ENOKI_F_WAKE_SYNC : 0;
	if (!enoki_call(&msg))
		return prev_cpu;
	cpu = msg.ret_cpu;
	if (cpu < 0 || cpu >= nr_cpu_ids || !cpu_online(cpu) ||
	    !cpumask_test_cpu(cpu, p->cpus_ptr)) {
		this_cpu_inc(enoki_stats.select_errors);
		return prev_cpu;
	}
	return cpu;
}

/* Wakes an idle CPU that may run @p, to drain the refused queue. */
static void enoki_kick_idle(struct task_struct *p)
{
	s32 cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);

	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

static void enoki_op_enqueue(struct task_struct *p, u64 enq_flags)
{
	struct rq *rq = task_rq(p);
	struct enoki_msg msg;
	bool preempted;

	/* put_prev_task_scx() enqueues a still-running task: a preemption */
	preempted = !(enq_flags & SCX_ENQ_WAKEUP) && rq->curr == p;
	enoki_msg_init(&msg, preempted ? ENOKI_TASK_PREEMPT : ENOKI_TASK_WAKEUP,
		       smp_processor_id());
	enoki_msg_task(&msg, p);
	msg.task_cpu = cpu_of(rq);
	if (preempted && __this_cpu_read(enoki_yielding) == p) {
		msg.flags |= ENOKI_F_YIELD;
		__this_cpu_write(enoki_yielding, NULL);
	}

	if (!enoki_call_apply(&msg, enoki_enqueued, p) || msg.ret < 0) {
		/* refused (or no scheduler): it runs outside the module */
		this_cpu_inc(enoki_stats.rejected);
		scx_bpf_dispatch(p, ENOKI_DSQ_REFUSED, enoki.slice_ns,
				 enq_flags);
		enoki_kick_idle(p);
	}

	/*
	 * SCX_ENQ_LAST: the CPU found nothing else and is about to leave the
	 * ext class although @p is still runnable. Make it look again, now
	 * that the scheduler or the refused queue holds @p.
	 */
	if (enq_flags & SCX_ENQ_LAST)
		scx_bpf_kick_cpu(cpu_of(rq), 0);
}

/* Sends a message about @p that needs no answer. */
static void enoki_task_msg(u32 kind, struct task_struct *p, u32 flags)
{
	struct enoki_msg msg;

	enoki_msg_init(&msg, kind, smp_processor_id());
	enoki_msg_task(&msg, p);
	msg.task_cpu = task_cpu(p);
	msg.flags = flags;
	enoki_call(&msg);
}

static void enoki_op_dequeue(struct task_struct *p, u64 deq_flags)
{
	/* @p was waiting in the scheduler: its token is void */
	enoki_task_msg(ENOKI_TASK_BLOCKED, p, 0);
}

static void enoki_op_quiescent(struct task_struct *p, u64 deq_flags)
{
	if (deq_flags & SCX_DEQ_SLEEP)
		enoki_task_msg(ENOKI_TASK_BLOCKED, p, ENOKI_F_SLEEP);
}

/*
 * Dispatches task @pid to @cpu's local queue: 0 or an ENOKI_ERR_* code,
 * with *@token_cpu set to where a token for it is still good (-1: nowhere).
 */
static int enoki_dispatch_pid(int cpu, s32 pid, u64 slice, s32 *token_cpu)
{
	struct task_struct *p;
	int err;

	*token_cpu = -1;
	rcu_read_lock();
	p = find_task_by_pid_ns(pid, &init_pid_ns);
	err = p ? enoki_check_task(p, cpu) : ENOKI_ERR_NO_TASK;
	if (!err) {
		scx_bpf_dispatch(p, SCX_DSQ_LOCAL,
				 slice ? enoki_clamp_slice(slice) :
					 enoki.slice_ns, 0);
		*this_cpu_ptr(&enoki_dispatched) = (struct enoki_dispatched){
			.p = p,
			.qseq = atomic_long_read(&p->scx.ops_state) &
				SCX_OPSS_QSEQ_MASK,
			.gen = p->scx.enoki_gen,
		};
	} else if (err == ENOKI_ERR_AFFINITY) {
		*token_cpu = task_cpu(p);
	}
	rcu_read_unlock();
	return err;
}

/* Asks the scheduler for a task to pull onto @cpu and moves its token. */
static bool enoki_balance(int cpu)
{
	struct task_struct *p;
	struct enoki_msg msg;
	s32 pid;
	int err;

	enoki_msg_init(&msg, ENOKI_BALANCE, cpu);
	if (!enoki_call(&msg) || msg.ret < 0)
		return false;
	pid = msg.ret;

	rcu_read_lock();
	p = find_task_by_pid_ns(pid, &init_pid_ns);
	err = p ? enoki_check_task(p, cpu) : ENOKI_ERR_NO_TASK;
	if (!err) {
		enoki_msg_init(&msg, ENOKI_MIGRATE_TASK_RQ, cpu);
		/* not its rq lock: a new pid is noticed by its own CPU */
		enoki_msg_fill(&msg, p);
		msg.task_cpu = cpu;
	}
	rcu_read_unlock();
	if (err) {
		enoki_send_err(ENOKI_BALANCE_ERR, cpu, pid, -1, err);
		return false;
	}
	enoki_call(&msg);
	return true;
}

/* The module said to keep running @prev: give it a new slice. */
static bool enoki_keep_prev(struct task_struct *prev, const struct enoki_msg *msg)
{
	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED) ||
	    msg->ret != prev->scx.enoki_pid)
		return false;
	prev->scx.slice = msg->ret_slice ? enoki_clamp_slice(msg->ret_slice) :
					   enoki.slice_ns;
	/* a yield with nothing else to run is over */
	if (__this_cpu_read(enoki_yielding) == prev)
		__this_cpu_write(enoki_yielding, NULL);
	return true;
}

enum enoki_pick_result {
	ENOKI_PICKED,	/* @cpu has a task */
	ENOKI_EMPTY,	/* the module has nothing for @cpu */
	ENOKI_RETRY,	/* its answer could not be used: ask again */
};

/* What became of a picked task: dispatched, or why not. */
struct enoki_picked {
	bool tried;
	int err;
	s32 token_cpu;
};

/* Dispatches the module's pick, under the call lock (see enoki_call_apply()). */
static void enoki_dispatch_pick(struct enoki_msg *msg, void *arg)
{
	struct enoki_picked *picked = arg;

	if (msg->ret < 0 || (msg->flags & ENOKI_F_KEEP_PREV))
		return;
	picked->tried = true;
	picked->err = enoki_dispatch_pid(msg->cpu, msg->ret, msg->ret_slice,
					 &picked->token_cpu);
}

/*
 * A token handed back to the module is for @token_cpu, whose queue it
 * returns to. That CPU may have found its queue empty and gone idle:
 * wake it, or the task waits for whatever wakes the CPU next.
 */
static void enoki_kick_token_cpu(s32 token_cpu, s32 cpu)
{
	if (token_cpu >= 0 && token_cpu < nr_cpu_ids && token_cpu != cpu)
		scx_bpf_kick_cpu(token_cpu, SCX_KICK_IDLE);
}

/* One pick from the module for @cpu. */
static enum enoki_pick_result enoki_pick(s32 cpu, struct task_struct *prev,
					 bool first)
{
	struct enoki_picked picked = { .token_cpu = -1 };
	struct enoki_msg msg;

	enoki_msg_init(&msg, ENOKI_PICK_NEXT_TASK, cpu);
	if (prev && first) {
		msg.flags |= ENOKI_F_HAS_PREV;
		msg.pid = prev->scx.enoki_pid;
		msg.generation = prev->scx.enoki_gen;
		msg.runtime = prev->se.sum_exec_runtime;
		if (prev->scx.flags & SCX_TASK_QUEUED)
			msg.flags |= ENOKI_F_PREV_RUNNABLE;
	}
	if (!enoki_call_apply(&msg, enoki_dispatch_pick, &picked))
		return ENOKI_EMPTY;
	if (msg.ret < 0) {
		if (!msg.ret_err)
			return ENOKI_EMPTY;
		/* libEnoki refused a token for another CPU: ask again */
		enoki_kick_token_cpu(msg.ret_cpu, cpu);
		return ENOKI_RETRY;
	}
	if (msg.flags & ENOKI_F_KEEP_PREV)
		return enoki_keep_prev(prev, &msg) ? ENOKI_PICKED : ENOKI_EMPTY;
	if (picked.tried && !picked.err)
		return ENOKI_PICKED;
	enoki_send_err(ENOKI_PNT_ERR, cpu, msg.ret, picked.token_cpu,
		       picked.tried ? picked.err : ENOKI_ERR_NO_TASK);
	enoki_kick_token_cpu(picked.token_cpu, cpu);
	return ENOKI_RETRY;
}

/*
 * Consumes @dsq, whose id is @id, if a task waits there. The lockless
 * length test is the one scx_bpf_consume() starts with, minus its hash
 * lookup of @id, which an empty queue would pay on every dispatch.
 */
static bool enoki_dsq_consume(struct scx_dispatch_q *dsq, u64 id)
{
	return READ_ONCE(dsq->nr) && scx_bpf_consume(id);
}

/* Runs a refused task here if one waits. */
static bool enoki_consume_refused(void)
{
	return enoki_dsq_consume(enoki_refused, ENOKI_DSQ_REFUSED);
}

static void enoki_op_dispatch(s32 cpu, struct task_struct *prev)
{
	struct enoki_stats *stats = this_cpu_ptr(&enoki_stats);
	/* a CPU whose task is still runnable has work: it never steals */
	bool balanced = prev && (prev->scx.flags & SCX_TASK_QUEUED);
	int tries;

	/* the last dispatch's buffer was flushed before this one began */
	this_cpu_write(enoki_dispatched.p, NULL);
	if (!(++stats->dispatches % ENOKI_REFUSED_EVERY) &&
	    enoki_consume_refused())
		return;
	for (tries = 0; tries < ENOKI_PICK_TRIES; tries++) {
		switch (enoki_pick(cpu, prev, !tries)) {
		case ENOKI_PICKED:
			return;
		case ENOKI_RETRY:
			continue;
		case ENOKI_EMPTY:
			break;
		}
		if (balanced || !enoki_balance(cpu))
			break;
		balanced = true;
	}
	enoki_consume_refused();
}

static void enoki_op_tick(struct task_struct *p)
{
	struct enoki_msg msg;

	enoki_msg_init(&msg, ENOKI_TASK_TICK, smp_processor_id());
	msg.pid = p->scx.enoki_pid;
	msg.generation = p->scx.enoki_gen;
	msg.runtime = p->se.sum_exec_runtime;
	if (enoki_call(&msg) && msg.ret > 0)
		p->scx.slice = 0;
}

static bool enoki_op_yield(struct task_struct *from, struct task_struct *to)
{
	if (to)
		return false;
	__this_cpu_write(enoki_yielding, from);
	from->scx.slice = 0;
	return false;
}

static void enoki_op_set_weight(struct task_struct *p, u32 weight)
{
	enoki_task_msg(ENOKI_TASK_PRIO_CHANGED, p, 0);
}

static void enoki_op_set_cpumask(struct task_struct *p,
				 const struct cpumask *cpumask)
{
	enoki_task_msg(ENOKI_TASK_AFFINITY_CHANGED, p, 0);
}

static void enoki_op_enable(struct task_struct *p)
{
	atomic_inc(&enoki_nr_tasks);
	enoki_task_new(p);
}

static void enoki_op_disable(struct task_struct *p)
{
	atomic_dec(&enoki_nr_tasks);
	enoki_task_dead(p);
}

static void enoki_cpu_msg(u32 kind, s32 cpu)
{
	struct enoki_msg msg;

	enoki_msg_init(&msg, kind, cpu);
	enoki_call(&msg);
}

static void enoki_op_cpu_online(s32 cpu)
{
	enoki_cpu_msg(ENOKI_CPU_ONLINE, cpu);
}

static void enoki_op_cpu_offline(s32 cpu)
{
	enoki_cpu_msg(ENOKI_CPU_OFFLINE, cpu);
	/* its preemption timer would kick a CPU that is gone */
	hrtimer_cancel(&per_cpu(enoki_timers, cpu).timer);
}

/*
 * sched_ext holds CPUs still around ops.init(): from here on the scheduler
 * hears of every CPU that comes or goes, so it hears now of those gone
 * already. Preemption is off for the call path's per-CPU statistics.
 */
static s32 enoki_op_init(void)
{
	int cpu, ret;

	preempt_disable();
	for_each_possible_cpu(cpu) {
		if (!cpu_online(cpu))
			enoki_cpu_msg(ENOKI_CPU_OFFLINE, cpu);
	}
	preempt_enable();
	ret = scx_bpf_create_dsq(ENOKI_DSQ_REFUSED, NUMA_NO_NODE);
	if (!ret)
		enoki_refused = find_user_dsq(ENOKI_DSQ_REFUSED);
	return ret;
}

/*
 * Keeps why sched_ext ended the scheduler (state, last_exit, its dump);
 * from the disable worker, after sched_ext moved tasks to CFS.
 */
static void enoki_note_exit(struct scx_exit_info *info)
{
	enum enoki_state state;
	ssize_t len;

	state = info->kind >= SCX_EXIT_ERROR ? ENOKI_EJECTED : ENOKI_EXITED;
	spin_lock_irq(&enoki_status_lock);
	enoki.state = state;
	if (info->msg && info->msg[0])
		snprintf(enoki.last_exit, sizeof(enoki.last_exit), "%s: %s",
			 info->reason ?: "unknown", info->msg);
	else
		strscpy(enoki.last_exit, info->reason ?: "unknown",
			sizeof(enoki.last_exit));
	if (info->dump) {
		len = strscpy(enoki_exit_dump, info->dump,
			      sizeof(enoki_exit_dump));
		enoki.exit_dump_len = len < 0 ? sizeof(enoki_exit_dump) - 1 : len;
	}
	spin_unlock_irq(&enoki_status_lock);
	if (state == ENOKI_EJECTED)
		pr_err("enoki: scheduler %s ejected: %s\n", enoki.name,
		       enoki.last_exit);
}

static void enoki_op_exit(struct scx_exit_info *info)
{
	unsigned long flags;

	/*
	 * A call that began before the failure may still be running (a CPU
	 * waiting on a lock the failed call held): the exit record comes
	 * after it, as the run's last.
	 */
	enoki_quiesce(&flags);
	enoki_record_exit(info->kind);
	enoki_unquiesce(&flags);
	enoki_note_exit(info);
}

#ifdef CONFIG_EXT_GROUP_SCHED
/* A message of @kind about @cgrp, whose cpu.weight is @weight. */
static void enoki_cgroup_msg_init(struct enoki_msg *msg, u32 kind,
				  struct cgroup *cgrp, u32 weight)
{
	struct cgroup *parent = cgroup_parent(cgrp);

	enoki_msg_init(msg, kind, raw_smp_processor_id());
	msg->cgroup = cgroup_id(cgrp);
	msg->cgroup_parent = parent ? cgroup_id(parent) : 0;
	msg->weight = weight;
}

/* Puts a cpu.max limit, as sched_ext gives it (us), into @msg (ns). */
static void enoki_cgroup_msg_bw(struct enoki_msg *msg, u64 period_us,
				u64 quota_us, u64 burst_us)
{
	msg->cgroup_period = period_us * NSEC_PER_USEC;
	msg->cgroup_quota = quota_us == U64_MAX ? U64_MAX :
			    quota_us * NSEC_PER_USEC;
	msg->cgroup_burst = burst_us * NSEC_PER_USEC;
}

static void enoki_cgroup_msg(u32 kind, struct cgroup *cgrp, u32 weight)
{
	struct enoki_msg msg;

	enoki_cgroup_msg_init(&msg, kind, cgrp, weight);
	enoki_call_from_process(&msg);
}

/*
 * Never fails: a scheduler with no room left for a cgroup counts its tasks
 * as its parent's, rather than making mkdir fail.
 */
static s32 enoki_op_cgroup_init(struct cgroup *cgrp,
				struct scx_cgroup_init_args *args)
{
	struct enoki_msg msg;

	enoki_cgroup_msg_init(&msg, ENOKI_CGROUP_NEW, cgrp, args->weight);
	enoki_cgroup_msg_bw(&msg, args->bw_period_us, args->bw_quota_us,
			    args->bw_burst_us);
	enoki_call_from_process(&msg);
	return 0;
}

static void enoki_op_cgroup_exit(struct cgroup *cgrp)
{
	enoki_cgroup_msg(ENOKI_CGROUP_GONE, cgrp, 0);
}

static void enoki_op_cgroup_set_weight(struct cgroup *cgrp, u32 weight)
{
	enoki_cgroup_msg(ENOKI_CGROUP_WEIGHT, cgrp, weight);
}

static void enoki_op_cgroup_set_bandwidth(struct cgroup *cgrp, u64 period_us,
					  u64 quota_us, u64 burst_us)
{
	struct enoki_msg msg;

	enoki_cgroup_msg_init(&msg, ENOKI_CGROUP_BANDWIDTH, cgrp, 0);
	enoki_cgroup_msg_bw(&msg, period_us, quota_us, burst_us);
	enoki_call_from_process(&msg);
}

/* Under @p's rq lock; in opt-in mode also for tasks not in Enoki. */
static void enoki_op_cgroup_move(struct task_struct *p, struct cgroup *from,
				 struct cgroup *to)
{
	struct enoki_msg msg;

	if (scx_get_task_state(p) != SCX_TASK_ENABLED)
		return;
	enoki_msg_init(&msg, ENOKI_TASK_CGROUP_MOVED, smp_processor_id());
	enoki_msg_task(&msg, p);
	msg.task_cpu = task_cpu(p);
	msg.cgroup = cgroup_id(to);
	enoki_call(&msg);
}
#endif

static struct sched_ext_ops enoki_scx_ops = {
	.select_cpu	= enoki_op_select_cpu,
	.enqueue	= enoki_op_enqueue,
	.dequeue	= enoki_op_dequeue,
	.dispatch	= enoki_op_dispatch,
	.tick		= enoki_op_tick,
	.quiescent	= enoki_op_quiescent,
	.yield		= enoki_op_yield,
	.set_weight	= enoki_op_set_weight,
	.set_cpumask	= enoki_op_set_cpumask,
	.enable		= enoki_op_enable,
	.disable	= enoki_op_disable,
	.cpu_online	= enoki_op_cpu_online,
	.cpu_offline	= enoki_op_cpu_offline,
#ifdef CONFIG_EXT_GROUP_SCHED
	.cgroup_init	= enoki_op_cgroup_init,
	.cgroup_exit	= enoki_op_cgroup_exit,
	.cgroup_move	= enoki_op_cgroup_move,
	.cgroup_set_weight = enoki_op_cgroup_set_weight,
	.cgroup_set_bandwidth = enoki_op_cgroup_set_bandwidth,
#endif
	.init		= enoki_op_init,
	.exit		= enoki_op_exit,
	.exit_dump_len	= ENOKI_EXIT_DUMP_LEN,
	.name		= "enoki",
};

static enum hrtimer_restart enoki_timer_fn(struct hrtimer *timer)
{
	struct enoki_timer *t = container_of(timer, struct enoki_timer, timer);

	if (scx_enabled() && READ_ONCE(enoki.ops)) {
		this_cpu_inc(enoki_stats.timer_preempts);
		scx_bpf_kick_cpu(t->cpu, SCX_KICK_PREEMPT);
	}
	return HRTIMER_NORESTART;
}

static bool enoki_cpu_valid(int cpu)
{
	return cpu >= 0 && cpu < nr_cpu_ids && cpu_online(cpu);
}

/**
 * enoki_kick_cpu - make @cpu pick again
 * @cpu: the CPU
 * @flags: ENOKI_KICK_PREEMPT stops its running task; ENOKI_KICK_RESCHED
 *         only wakes it if it is idle
 *
 * A CPU that runs a task is not rescheduled for ENOKI_KICK_RESCHED: its
 * ext task keeps running while it has slice left without the module being
 * asked, and a fair or RT task outranks the ext class. Such a kick would
 * cost an IPI and a pass through __schedule() for nothing, and a module
 * whose idle flags lag behind could send one with every enqueue.
 */
void enoki_kick_cpu(int cpu, u32 flags)
{
	if (!enoki_cpu_valid(cpu) || !scx_enabled())
		return;
	scx_bpf_kick_cpu(cpu, flags & ENOKI_KICK_PREEMPT ? SCX_KICK_PREEMPT :
							  SCX_KICK_IDLE);
}
EXPORT_SYMBOL_GPL(enoki_kick_cpu);

/**
 * enoki_set_timer - preempt @cpu after @ns nanoseconds
 * @cpu: the CPU
 * @ns: delay; an armed timer is replaced
 */
void enoki_set_timer(int cpu, u64 ns)
{
	if (!enoki_cpu_valid(cpu))
		return;
	hrtimer_start(&per_cpu(enoki_timers, cpu).timer, ns_to_ktime(ns),
		      HRTIMER_MODE_REL);
}
EXPORT_SYMBOL_GPL(enoki_set_timer);

/**
 * enoki_cancel_timer - disarm @cpu's preemption timer
 * @cpu: the CPU
 */
void enoki_cancel_timer(int cpu)
{
	if (!enoki_cpu_valid(cpu))
		return;
	hrtimer_try_to_cancel(&per_cpu(enoki_timers, cpu).timer);
}
EXPORT_SYMBOL_GPL(enoki_cancel_timer);

/**
 * enoki_log - log a line from a scheduler, safe under runqueue locks
 * @level: 0 error, 1 warning, 2 info, 3 debug
 * @msg: text, not NUL-terminated
 * @len: its length
 */
void enoki_log(int level, const char *msg, size_t len)
{
	static const char * const levels[] = {
		KERN_ERR, KERN_WARNING, KERN_INFO, KERN_DEBUG,
	};

	level = clamp(level, 0, (int)ARRAY_SIZE(levels) - 1);
	/* printk takes the level from the formatted text */
	printk_deferred("%senoki %s: %.*s\n", levels[level], enoki.name,
			(int)min_t(size_t, len, 512), msg);
}
EXPORT_SYMBOL_GPL(enoki_log);

/**
 * enoki_this_cpu - the CPU a scheduler call runs on
 *
 * Return: the CPU inside a call (interrupts are off there), -1 elsewhere:
 * libEnoki's deadlock detector keeps a table of held locks per CPU, which
 * code that can move between CPUs (module init) must stay out of.
 */
int enoki_this_cpu(void)
{
	return irqs_disabled() ? raw_smp_processor_id() : -1;
}
EXPORT_SYMBOL_GPL(enoki_this_cpu);

/**
 * enoki_clock_ns - a clock for libEnoki's lock timeout and call budget
 *
 * Not local_clock(): with an unstable TSC (emulated CPUs) it does not move
 * past the next tick while interrupts are off, which is exactly when a
 * waiting CPU reads it.
 *
 * Return: CLOCK_MONOTONIC, ns, readable in any context.
 */
u64 enoki_clock_ns(void)
{
	return ktime_get_mono_fast_ns();
}
EXPORT_SYMBOL_GPL(enoki_clock_ns);

/**
 * enoki_fail - eject the scheduler for a fault libEnoki caught
 * @report: what went wrong (kind, CPUs, locks, source lines); not
 *          NUL-terminated
 * @len: its length
 *
 * Called from inside a call, under the rq lock with interrupts off.
 * sched_ext's error exit only queues an irq_work; its disable worker then
 * moves every task back to CFS and calls enoki_op_exit(), which keeps the
 * report in last_exit. libEnoki answers every later call itself, so no
 * message reaches the scheduler again.
 */
void enoki_fail(const char *report, size_t len)
{
	int n = min_t(size_t, len, SCX_EXIT_MSG_LEN - 1);

	enoki_log(0, report, n);
	scx_ops_error("%s: %.*s", enoki.name, n, report);
}
EXPORT_SYMBOL_GPL(enoki_fail);

/**
 * enoki_get_topology - describe the machine to a scheduler
 * @topo: filled in
 *
 * Return: 0, or -E2BIG when the machine has more CPUs or nodes than the
 * ABI can describe.
 */
int enoki_get_topology(struct enoki_topology *topo)
{
	int cpu, a, b;

	if (nr_cpu_ids > ENOKI_MAX_CPUS || nr_node_ids > ENOKI_MAX_NODES)
		return -E2BIG;
	memset(topo, 0, sizeof(*topo));
	topo->nr_cpus = nr_cpu_ids;
	topo->nr_nodes = nr_node_ids;
	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		struct enoki_cpu_topo *t = &topo->cpus[cpu];

		t->core = cpumask_first(topology_sibling_cpumask(cpu));
		t->llc = per_cpu(sd_llc_id, cpu);
		t->node = cpu_to_node(cpu);
		t->package = topology_physical_package_id(cpu);
		if (t->core >= nr_cpu_ids)
			t->core = cpu;
		if (t->llc < 0 || t->llc >= nr_cpu_ids)
			t->llc = cpu;
		if (t->node < 0)
			t->node = 0;
	}
	for (a = 0; a < nr_node_ids; a++)
		for (b = 0; b < nr_node_ids; b++)
			topo->distance[a][b] = node_distance(a, b);
	return 0;
}
EXPORT_SYMBOL_GPL(enoki_get_topology);

static void enoki_clear(void)
{
	int cpu;

	enoki_set_ops(NULL);
	WRITE_ONCE(enoki.native, NULL);
	for_each_possible_cpu(cpu)
		hrtimer_cancel(&per_cpu(enoki_timers, cpu).timer);
}

/* Whether a scheduler, with messages or native, is loaded. */
static bool enoki_loaded(void)
{
	return READ_ONCE(enoki.ops) || READ_ONCE(enoki.native);
}

/* BALANCE and the messages that only follow it */
#define ENOKI_MSGS_BALANCE	((1U << ENOKI_BALANCE) | \
				 (1U << ENOKI_BALANCE_ERR) | \
				 (1U << ENOKI_MIGRATE_TASK_RQ))
#define ENOKI_MSGS_CGROUP	((1U << ENOKI_CGROUP_NEW) | \
				 (1U << ENOKI_CGROUP_GONE) | \
				 (1U << ENOKI_CGROUP_WEIGHT) | \
				 (1U << ENOKI_TASK_CGROUP_MOVED) | \
				 (1U << ENOKI_CGROUP_BANDWIDTH))
#define ENOKI_MSGS_HINT		((1U << ENOKI_QUEUE_NEW) | \
				 (1U << ENOKI_HINT) | \
				 (1U << ENOKI_QUEUE_GONE))

/* Whether @ops takes all of @group or none of it. */
static bool enoki_takes_whole(const struct enoki_sched_ops *ops, u32 group)
{
	u32 taken = ops->handles & group;

	return !taken || taken == group;
}

/* A scheduler's mode, slice (0: sched_ext's default) and watchdog. */
static bool enoki_settings_valid(u32 mode, u64 slice_ns, u32 timeout_ms)
{
	return mode <= ENOKI_MODE_OPT_IN &&
	       (!slice_ns || (slice_ns >= ENOKI_SLICE_MIN_NS &&
			      slice_ns <= ENOKI_SLICE_MAX_NS)) &&
	       timeout_ms <= SCX_WATCHDOG_MAX_TIMEOUT / HZ * MSEC_PER_SEC;
}

static bool enoki_ops_valid(const struct enoki_sched_ops *ops)
{
	return ops && ops->abi_version == ENOKI_ABI_VERSION && ops->process &&
	       !(ops->handles & ~ENOKI_MSGS_OPTIONAL) &&
	       enoki_takes_whole(ops, ENOKI_MSGS_BALANCE) &&
	       enoki_takes_whole(ops, ENOKI_MSGS_CGROUP) &&
	       enoki_takes_whole(ops, ENOKI_MSGS_HINT) &&
	       ops->hint_size <= sizeof_field(struct enoki_msg, allowed) &&
	       ops->rev_hint_size <= sizeof_field(struct enoki_msg, allowed) &&
	       memchr(ops->name, '\0', sizeof(ops->name)) && ops->name[0] &&
	       enoki_settings_valid(ops->mode, ops->slice_ns, ops->timeout_ms);
}

/* Describes the scheduler about to load, before sched_ext calls into it. */
static void enoki_take(const char *name, struct module *owner, u32 mode,
		       u64 slice_ns)
{
	int cpu;

	strscpy(enoki.name, name, sizeof(enoki.name));
	strscpy(enoki.module, owner ? module_name(owner) : "",
		sizeof(enoki.module));
	enoki.mode = mode;
	enoki.slice_ns = slice_ns ?: SCX_SLICE_DFL;
	for_each_possible_cpu(cpu) {
		memset(per_cpu_ptr(&enoki_stats, cpu), 0,
		       sizeof(struct enoki_stats));
		per_cpu(enoki_yielding, cpu) = NULL;
	}
	spin_lock_irq(&enoki_status_lock);
	enoki.state = ENOKI_ENABLED;
	enoki.last_exit[0] = '\0';
	enoki.exit_dump_len = 0;
	spin_unlock_irq(&enoki_status_lock);
}

/*
 * Under enoki_mutex: 0 when no scheduler (Enoki or BPF) runs, so that
 * @name may load; the previous one's hint queues are retired.
 */
static int enoki_claim(const char *name)
{
	/* an exit in progress finishes before its state is looked at */
	kthread_flush_work(&scx_ops_disable_work);
	if (READ_ONCE(enoki.state) == ENOKI_ENABLED || scx_enabled()) {
		pr_err("enoki: cannot load %s: scheduler %s is loaded\n",
		       name, enoki_loaded() ? enoki.name : "(BPF)");
		return -EBUSY;
	}
	enoki_queues_retire();
	return 0;
}

/* sched_ext's flags for a scheduler of @mode, with or without messages. */
static u64 enoki_scx_flags(u32 mode)
{
	return SCX_OPS_ENQ_LAST |
	       (mode == ENOKI_MODE_OPT_IN ? SCX_OPS_SWITCH_PARTIAL : 0);
}

/* Under enoki_mutex, after enoki_take(): hands @scx to sched_ext. */
static int enoki_enable(struct sched_ext_ops *scx)
{
	int ret = scx_ops_enable(scx, NULL);

	if (!ret && scx_ops_enable_state() != SCX_OPS_ENABLED)
		ret = -EINVAL;
	if (ret) {
		pr_err("enoki: enabling %s failed (%d): %s\n", enoki.name, ret,
		       enoki.last_exit);
		enoki_clear();
		enoki_set_state(ENOKI_NONE);
		return ret;
	}
	pr_info("enoki: scheduler %s loaded (mode %s)\n", enoki.name,
		enoki.mode == ENOKI_MODE_OPT_IN ? "opt-in" : "all");
	return 0;
}

/**
 * enoki_register - load a scheduler module's scheduler
 * @ops: the module's entry point and settings; must stay valid until
 *       enoki_unregister()
 *
 * Switches tasks to the scheduler (all normal tasks, or only SCHED_EXT ones
 * in opt-in mode) and returns once it runs. A scheduler that sched_ext
 * ended (state exited or ejected) no longer counts as loaded: its module
 * may stay until it is removed.
 *
 * Return: 0, -EBUSY if a scheduler (Enoki or BPF) is running, -EINVAL for
 * bad @ops (slice outside 50 us..1 s, watchdog over sched_ext's maximum)
 * or when sched_ext refused to enable it (reason in
 * /sys/kernel/enoki/last_exit).
 */
int enoki_register(const struct enoki_sched_ops *ops)
{
	int ret;

	if (!enoki_ops_valid(ops)) {
		pr_err("enoki: bad scheduler registration (ABI %u, kernel %u)\n",
		       ops ? ops->abi_version : 0, ENOKI_ABI_VERSION);
		return -EINVAL;
	}

	mutex_lock(&enoki_mutex);
	ret = enoki_claim(ops->name);
	if (ret)
		goto out;
	enoki_take(ops->name, ops->owner, ops->mode, ops->slice_ns);
	enoki_set_ops(ops);
	enoki_scx_ops.flags = enoki_scx_flags(ops->mode);
	if (ops->handles & ENOKI_MSGS_CGROUP)
		enoki_scx_ops.flags |= SCX_OPS_HAS_CGROUP_WEIGHT;
	enoki_scx_ops.timeout_ms = ops->timeout_ms;
	ret = enoki_enable(&enoki_scx_ops);
out:
	mutex_unlock(&enoki_mutex);
	return ret;
}
EXPORT_SYMBOL_GPL(enoki_register);

/*
 * Loads @scx, a scheduler written against sched_ext itself (the C
 * baselines in enoki_cfifo.c): no messages, so nothing to check, record
 * or upgrade, but the same registration, status and unload as a module's.
 * sched_ext's exit must reach enoki_note_exit(). Return as enoki_register().
 */
static int enoki_register_native(struct sched_ext_ops *scx, const char *name,
				 struct module *owner, u32 mode, u64 slice_ns,
				 u32 timeout_ms)
{
	int ret;

	if (!enoki_settings_valid(mode, slice_ns, timeout_ms))
		return -EINVAL;
	mutex_lock(&enoki_mutex);
	ret = enoki_claim(name);
	if (ret)
		goto out;
	enoki_take(name, owner, mode, slice_ns);
	WRITE_ONCE(enoki.native, scx);
	scx->flags = enoki_scx_flags(mode);
	scx->timeout_ms = timeout_ms;
	ret = enoki_enable(scx);
out:
	mutex_unlock(&enoki_mutex);
	return ret;
}

/* Whether @p was picked by this CPU's last dispatch, not yet flushed. */
static bool enoki_being_dispatched(struct task_struct *p, unsigned long qseq)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		struct enoki_dispatched *d = per_cpu_ptr(&enoki_dispatched, cpu);

		if (READ_ONCE(d->p) == p && d->qseq == qseq &&
		    d->gen == p->scx.enoki_gen)
			return true;
	}
	return false;
}

struct enoki_handover {
	u32 tasks;
	u32 changes;
	u32 waiting;
	u32 looked;	/* tasks looked at for tokens */
	bool carried;
	bool held;	/* calls were held off */
	u64 precopy_ns;	/* the state's pre-copy, before the blackout */
	/* parts of the blackout */
	u64 quiesce_ns;	/* waiting for calls in flight */
	u64 state_ns;	/* the state's export and adoption */
};

/*
 * Gives @ops a token for @p if the running version holds one: @p is
 * QUEUED in sched_ext and not just picked. Counts @p in @h. Returns -EPERM
 * if @ops would not take it.
 */
static int enoki_offer_token(const struct enoki_sched_ops *ops,
			     struct task_struct *p, struct enoki_handover *h)
{
	unsigned long opss;
	struct enoki_msg msg;

	h->looked++;
	/*
	 * A picked task is QUEUED until its CPU flushes its dispatch buffer,
	 * which it may do now: it is the module's only if it is QUEUED, not
	 * picked, and still QUEUED the same way after the look (a flush
	 * changes the state before the next dispatch clears the mark).
	 */
	opss = atomic_long_read(&p->scx.ops_state);
	if ((opss & SCX_OPSS_STATE_MASK) != SCX_OPSS_QUEUED ||
	    enoki_being_dispatched(p, opss & SCX_OPSS_QSEQ_MASK))
		return 0;
	/* pairs with the dispatching CPU's rq lock release after its flush */
	smp_rmb();
	if (atomic_long_read(&p->scx.ops_state) != opss)
		return 0;
	enoki_msg_init(&msg, ENOKI_TASK_WAKEUP, smp_processor_id());
	enoki_msg_fill(&msg, p);
	msg.task_cpu = task_cpu(p);
	ops->process(ops->sched, &msg);
	if (msg.ret < 0)
		return -EPERM;
	h->waiting++;
	return 0;
}

/* The task at @pos of scx_tasks if it is one of Enoki's, else NULL. */
static struct task_struct *enoki_listed_task(struct sched_ext_entity *pos)
{
	struct task_struct *p;

	if (pos->flags & SCX_TASK_CURSOR)
		return NULL;
	p = container_of(pos, struct task_struct, scx);
	return scx_get_task_state(p) == SCX_TASK_ENABLED ? p : NULL;
}

/*
 * Every cgroup sched_ext told the running version of, parents first, to
 * @ops; one created or removed meanwhile is logged, and told again after.
 */
static void enoki_meet_cgroups(const struct enoki_sched_ops *ops)
{
#ifdef CONFIG_EXT_GROUP_SCHED
	struct cgroup_subsys_state *css;
	struct enoki_msg msg;

	if (!enoki_handles(ops, ENOKI_CGROUP_NEW))
		return;
	rcu_read_lock();
	css_for_each_descendant_pre(css, &root_task_group.css) {
		struct task_group *tg = css_tg(css);

		if (!(READ_ONCE(tg->scx_flags) & SCX_TG_INITED))
			continue;
		enoki_cgroup_msg_init(&msg, ENOKI_CGROUP_NEW, css->cgroup,
				      READ_ONCE(tg->scx_weight));
		enoki_cgroup_msg_bw(&msg, READ_ONCE(tg->scx_bw_period_us),
				    READ_ONCE(tg->scx_bw_quota_us),
				    READ_ONCE(tg->scx_bw_burst_us));
		ops->process(ops->sched, &msg);
	}
	rcu_read_unlock();
#endif
}

/*
 * First step of an upgrade, with the task list locked and calls still
 * going to the running version: @ops hears which CPUs are offline, and
 * every task of Enoki meets it (TASK_NEW). From the first look on, the
 * calls that change a task are logged for enoki_hand_over(): a pass over
 * every call lock first makes each call either end before the look or see
 * the log on.
 */
static void enoki_meet_tasks(const struct enoki_sched_ops *ops,
			     struct enoki_handover *h)
{
	struct sched_ext_entity *pos;
	struct task_struct *p;
	struct enoki_msg msg;
	int cpu;

	lockdep_assert_held(&scx_tasks_lock);
	atomic_set(&enoki_intro.nr, 0);
	atomic_set(&enoki_waiting.nr, 0);
	WRITE_ONCE(enoki_intro.on, true);
	lock_acquire_exclusive(&enoki_call_map, 0, 0, NULL, _RET_IP_);
	for_each_possible_cpu(cpu) {
		arch_spin_lock(per_cpu_ptr(&enoki_call_lock, cpu));
		arch_spin_unlock(per_cpu_ptr(&enoki_call_lock, cpu));
	}
	lock_release(&enoki_call_map, _RET_IP_);
	/*
	 * A CPU leaves the active mask before its offline call and joins it
	 * before its online call; a call after the look is logged, so the
	 * look may tell a CPU's going twice but never misses it.
	 */
	for_each_possible_cpu(cpu) {
		if (cpu_active(cpu))
			continue;
		enoki_msg_init(&msg, ENOKI_CPU_OFFLINE, cpu);
		if (enoki_handles(ops, msg.kind))
			ops->process(ops->sched, &msg);
	}
	enoki_meet_cgroups(ops);
	list_for_each_entry(pos, &scx_tasks, tasks_node) {
		p = enoki_listed_task(pos);
		if (!p)
			continue;
		enoki_msg_init(&msg, ENOKI_TASK_NEW, smp_processor_id());
		enoki_msg_fill(&msg, p);
		msg.task_cpu = task_cpu(p);
		ops->process(ops->sched, &msg);
		h->tasks++;
		/*
		 * Queued, or being queued, since before the look; a task
		 * queued after it is listed by its enqueue call, which sees
		 * enoki_intro.on.
		 */
		if (atomic_long_read(&p->scx.ops_state) & SCX_OPSS_STATE_MASK)
			enoki_waiting_log(p);
	}
}

/*
 * With every call held off: the changes logged since enoki_meet_tasks()
 * looked, in the order they happened, to @ops. -EAGAIN if there were more
 * than the log holds.
 */
static int enoki_replay_changes(const struct enoki_sched_ops *ops,
				struct enoki_handover *h)
{
	int i, nr = atomic_read(&enoki_intro.nr);

	if (nr > ENOKI_INTRO_LOG) {
		pr_err("enoki: upgrade to %s refused: %d changes to tasks, CPUs or cgroups while it met them (at most %d)\n",
		       ops->name, nr, ENOKI_INTRO_LOG);
		return -EAGAIN;
	}
	for (i = 0; i < nr; i++) {
		struct enoki_msg msg = enoki_intro.msgs[i];

		/* a task's news now come from here; a CPU's name that CPU */
		if (msg.kind != ENOKI_CPU_ONLINE && msg.kind != ENOKI_CPU_OFFLINE)
			msg.cpu = smp_processor_id();
		msg.ret = -1;
		msg.ret_cpu = -1;
		msg.ret_err = 0;
		msg.ret_slice = 0;
		if (enoki_handles(ops, msg.kind))
			ops->process(ops->sched, &msg);
	}
	h->changes = nr;
	return 0;
}

static int enoki_cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * With every call held off: enoki_offer_token() for each task of
 * enoki_waiting (which holds them all), once.
 */
static int enoki_offer_listed_tokens(const struct enoki_sched_ops *ops,
				     struct enoki_handover *h)
{
	struct task_struct **tasks = enoki_waiting.tasks;
	int i, ret, nr = atomic_read(&enoki_waiting.nr);

	sort(tasks, nr, sizeof(*tasks), enoki_cmp_ptr, NULL);
	for (i = 0; i < nr; i++) {
		if ((i && tasks[i] == tasks[i - 1]) ||
		    scx_get_task_state(tasks[i]) != SCX_TASK_ENABLED)
			continue;
		ret = enoki_offer_token(ops, tasks[i], h);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * The running version's state to @ops, which starts from it; the time it
 * took in @ns. The running version's export only reads.
 */
static int enoki_carry_state(const struct enoki_sched_ops *ops, u64 *ns)
{
	const struct enoki_sched_ops *old = enoki.ops;
	u64 start = ktime_get_mono_fast_ns();
	int ret;

	ret = old->export_state(old->sched, ops->state);
	if (!ret)
		ret = ops->adopt_state(ops->sched, ops->state);
	*ns = ktime_get_mono_fast_ns() - start;
	return ret;
}

/*
 * Second step, with every call held off and the task list locked: the
 * changes since @ops met the tasks, the running version's state again
 * (when @carry; its pre-copy is now stale), and a token for each task the
 * running version holds. Nothing of the running version changes, so an
 * error leaves it as it was.
 */
static int enoki_hand_over(const struct enoki_sched_ops *ops, bool carry,
			   struct enoki_handover *h)
{
	struct sched_ext_entity *pos;
	struct task_struct *p;
	int ret;

	lockdep_assert_held(&scx_tasks_lock);
	ret = enoki_replay_changes(ops, h);
	if (ret)
		return ret;
	if (carry) {
		ret = enoki_carry_state(ops, &h->state_ns);
		if (ret)
			return ret;
		h->carried = true;
	}
	if (atomic_read(&enoki_waiting.nr) <= ENOKI_WAITING_LOG)
		return enoki_offer_listed_tokens(ops, h);
	list_for_each_entry(pos, &scx_tasks, tasks_node) {
		p = enoki_listed_task(pos);
		if (!p)
			continue;
		ret = enoki_offer_token(ops, p, h);
		if (ret)
			return ret;
	}
	return 0;
}

/* Can @ops replace the running scheduler? 0, or why not (logged). */
static int enoki_upgrade_check(const struct enoki_sched_ops *ops, bool fresh,
			       bool *carry)
{
	const struct enoki_sched_ops *old = enoki.ops;

	if (enoki.native) {
		pr_err("enoki: cannot upgrade %s to %s: it is a C scheduler\n",
		       enoki.name, ops->name);
		return -EINVAL;
	}
	if (!old || READ_ONCE(enoki.state) != ENOKI_ENABLED || !scx_enabled()) {
		pr_err("enoki: cannot upgrade to %s: no scheduler is running\n",
		       ops->name);
		return -ENOENT;
	}
	if (old == ops || (ops->owner && old->owner == ops->owner)) {
		pr_err("enoki: cannot upgrade %s to the module it runs from\n",
		       enoki.name);
		return -EEXIST;
	}
	if (ops->mode != old->mode) {
		pr_err("enoki: cannot upgrade %s to %s: the mode differs\n",
		       enoki.name, ops->name);
		return -EINVAL;
	}
	*carry = !fresh && old->state_fp && ops->state_fp;
	if (*carry && (old->state_fp != ops->state_fp || !ops->state)) {
		pr_err("enoki: upgrade of %s to %s refused: their states differ (fingerprint %#llx running, %#llx new)\n",
		       enoki.name, ops->name, old->state_fp, ops->state_fp);
		return -EPROTO;
	}
	return 0;
}

/* Holds every call off, hands over to @ops and switches to it. */
static int enoki_swap(const struct enoki_sched_ops *ops, bool carry,
		      struct enoki_handover *h, u64 *blackout_ns)
{
	unsigned long flags, qflags;
	u64 start;
	int ret;

	/* no task is between sched_ext's enable and its task list */
	percpu_down_write(&scx_fork_rwsem);
	spin_lock_irqsave(&scx_tasks_lock, flags);
	enoki_meet_tasks(ops, h);
	/* a refusal here holds nothing off */
	ret = carry ? enoki_carry_state(ops, &h->precopy_ns) : 0;
	if (ret) {
		WRITE_ONCE(enoki_intro.on, false);
		goto unlock;
	}
	/* from the first call lock taken to the last one released */
	start = ktime_get_mono_fast_ns();
	enoki_quiesce(&qflags);
	h->quiesce_ns = ktime_get_mono_fast_ns() - start;
	ret = enoki_hand_over(ops, carry, h);
	if (!ret) {
		enoki_record_upgrade(h->carried ? ops->state_fp : 0);
		WRITE_ONCE(enoki.ops, ops);
	}
	WRITE_ONCE(enoki_intro.on, false);
	enoki_unquiesce(&qflags);
	*blackout_ns = ktime_get_mono_fast_ns() - start;
	h->held = true;
unlock:
	spin_unlock_irqrestore(&scx_tasks_lock, flags);
	percpu_up_write(&scx_fork_rwsem);
	return ret;
}

/**
 * enoki_upgrade - replace the running scheduler with @ops, live
 * @ops: the next version (or another scheduler), created but not
 *       registered; must stay valid until enoki_unregister()
 * @fresh: start @ops from the task list alone, even if the running version
 *         has state for it
 *
 * First every task in Enoki meets @ops (TASK_NEW) and @ops adopts a first
 * copy of the running version's state (when both have matching state)
 * while the running version goes on scheduling. Then, with every CPU's
 * calls held off (and so every message waiting): @ops hears of the tasks
 * that changed meanwhile, adopts the state again, now final (the first
 * pass has made both versions' code and data warm, so the blackout costs
 * only what the state holds), and gets a fresh token (TASK_WAKEUP) for
 * each task the running version held one for; calls go to @ops from then
 * on. Tasks never leave sched_ext. Every CPU is
 * then kicked, so each running task comes back through TASK_PREEMPT. The
 * replaced module is no longer called and can be removed. While
 * recording, the switch is marked in the trace (ENOKI_REC_UPGRADE).
 * Hint queues outlive the switch when both versions read the same hint
 * type (they meet @ops first); otherwise they are retired.
 *
 * Return: 0; -ENOENT if no scheduler runs, -EEXIST for the module already
 * running, -EINVAL for bad @ops or another mode, -EPROTO when the states
 * differ, -EAGAIN when more tasks changed while @ops met them than it can
 * hear of, or the error of the state handover or -EPERM when @ops would
 * not take a task or a hint queue: then the running version goes on, untouched.
 */
int enoki_upgrade(const struct enoki_sched_ops *ops, bool fresh)
{
	const struct enoki_sched_ops *old;
	struct enoki_handover h = { };
	char old_module[MODULE_NAME_LEN];
	u64 blackout;
	bool carry;
	int cpu, ret;

	if (!enoki_ops_valid(ops))
		return -EINVAL;
	mutex_lock(&enoki_mutex);
	kthread_flush_work(&scx_ops_disable_work);
	ret = enoki_upgrade_check(ops, fresh, &carry);
	if (ret)
		goto out;
	old = enoki.ops;
	ret = enoki_queues_upgrade_begin(old, ops);
	if (!ret)
		ret = enoki_swap(ops, carry, &h, &blackout);
	enoki_queues_upgrade_end(old, ops, !ret);
	if (ret) {
		pr_err("enoki: upgrade of %s to %s refused (%d) %s: the running version goes on\n",
		       enoki.name, ops->name, ret,
		       h.held ? "with calls held off" :
				"before any call was held off");
		goto out;
	}
	strscpy(old_module, enoki.module, sizeof(old_module));
	strscpy(enoki.name, ops->name, sizeof(enoki.name));
	strscpy(enoki.module, ops->owner ? module_name(ops->owner) : "",
		sizeof(enoki.module));
	enoki.upgrades++;
	enoki.blackout_last_ns = blackout;
	enoki.blackout_max_ns = max(enoki.blackout_max_ns, blackout);
	for_each_online_cpu(cpu)
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	pr_info("enoki: upgraded %s to %s (%s): %u tasks, %u changed meanwhile, %u waiting of %u looked at, %s, calls held off %llu ns (%llu ns of it waiting for calls in flight, %llu ns carrying the state, pre-copied in %llu ns before)\n",
		old_module, enoki.module, enoki.name, h.tasks, h.changes,
		h.waiting, h.looked,
		h.carried ? "state carried" : "fresh state",
		blackout, h.quiesce_ns, h.state_ns, h.precopy_ns);
out:
	mutex_unlock(&enoki_mutex);
	return ret;
}
EXPORT_SYMBOL_GPL(enoki_upgrade);

/* Under enoki_mutex: stops the loaded scheduler; tasks go back to CFS. */
static void enoki_disable(void)
{
	scx_ops_disable(SCX_EXIT_UNREG);
	kthread_flush_work(&scx_ops_disable_work);
	enoki_clear();
	enoki_set_state(ENOKI_NONE);
	pr_info("enoki: scheduler %s unloaded\n", enoki.name);
	enoki.name[0] = '\0';
	enoki.module[0] = '\0';
}

/**
 * enoki_unregister - stop a scheduler; tasks go back to CFS
 * @ops: what was passed to enoki_register()
 *
 * Returns once no call into the module can happen any more.
 */
void enoki_unregister(const struct enoki_sched_ops *ops)
{
	mutex_lock(&enoki_mutex);
	if (enoki.ops == ops)
		enoki_disable();
	mutex_unlock(&enoki_mutex);
}
EXPORT_SYMBOL_GPL(enoki_unregister);

/* enoki_unregister() of what enoki_register_native() loaded. */
static void enoki_unregister_native(const struct sched_ext_ops *scx)
{
	mutex_lock(&enoki_mutex);
	if (enoki.native == scx)
		enoki_disable();
	mutex_unlock(&enoki_mutex);
}

static int __init enoki_init(void)
{
	int cpu;

	lockdep_init_map_wait(&enoki_call_map, "enoki_call_lock",
			      &enoki_call_key, 0, LD_WAIT_SPIN);
	for_each_possible_cpu(cpu) {
		struct enoki_timer *t = per_cpu_ptr(&enoki_timers, cpu);

		hrtimer_init(&t->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
		t->timer.function = enoki_timer_fn;
		t->cpu = cpu;
	}
	return 0;
}
late_initcall(enoki_init);
