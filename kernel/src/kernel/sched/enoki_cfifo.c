// SPDX-License-Identifier: GPL-2.0
/*
 * Enoki-C's C FIFO: the policy of schedulers/fifo written against sched_ext
 * directly, with no messages. It is the baseline that separates what
 * sched_ext costs (C FIFO against the default scheduler) from what Enoki's
 * message path costs (schedulers/fifo against C FIFO). enoki_cfifo.ko
 * loads it, through the registration, status and unload of every Enoki
 * scheduler (enoki_register_native()).
 *
 * The policy, as schedulers/fifo's:
 * - one FIFO queue per CPU (a sched_ext DSQ whose id is the CPU number);
 * - a task woken by a sync waker goes to the waker's CPU when nothing
 *   waits there, which then must not kick an idle CPU to steal it; any
 *   other to its previous CPU if idle, else to an idle allowed CPU, else
 *   to its previous CPU;
 * - a picked task runs one slice, then goes to the back of its queue;
 * - an idle CPU steals the oldest allowed task of the longest queue; a CPU
 *   that queues work while it is busy kicks an idle allowed CPU to steal.
 * Idle CPUs are sched_ext's built-in idle tracking where schedulers/fifo
 * keeps its own flags, and idle CPUs are not ordered by distance.
 *
 * Owns: the per-CPU hand-over marks and DSQ pointers. Locks: none of its
 * own; sched_ext's rq and DSQ locks around each operation, as for any
 * sched_ext scheduler.
 *
 * build_policy.c includes this file after enoki.c, whose registration it
 * calls; enoki_cfifo_register() and enoki_cfifo_unregister() are what the
 * module calls.
 */

/* set by a sync wakeup placed on this CPU, cleared by the enqueue after */
static DEFINE_PER_CPU(bool, enoki_cfifo_handoff);

/*
 * Each CPU's DSQ, looked up once at init: scx_bpf_dsq_nr_queued() hashes
 * the id on every call, and the steal scan asks every CPU's length, where
 * schedulers/fifo reads its own per-CPU counts. Valid while the scheduler
 * is enabled, the only time its callbacks run (sched_ext frees user DSQs
 * after disabling it).
 */
static DEFINE_PER_CPU(struct scx_dispatch_q *, enoki_cfifo_dsq);

/* How many tasks wait in @cpu's queue (a racy read, as the kfunc's). */
static s32 enoki_cfifo_queued(s32 cpu)
{
	return READ_ONCE(per_cpu(enoki_cfifo_dsq, cpu)->nr);
}

/* Runs the oldest task of @cpu's queue here if one waits. */
static bool enoki_cfifo_consume(s32 cpu)
{
	return enoki_dsq_consume(per_cpu(enoki_cfifo_dsq, cpu), cpu);
}

static s32 enoki_cfifo_select_cpu(struct task_struct *p, s32 prev_cpu,
				  u64 wake_flags)
{
	s32 waker = smp_processor_id();
	s32 cpu;

	if ((wake_flags & SCX_WAKE_SYNC) &&
	    cpumask_test_cpu(waker, p->cpus_ptr) &&
	    !enoki_cfifo_queued(waker)) {
		per_cpu(enoki_cfifo_handoff, waker) = true;
		return waker;
	}
	if (cpumask_test_cpu(prev_cpu, p->cpus_ptr) &&
	    scx_bpf_test_and_clear_cpu_idle(prev_cpu))
		return prev_cpu;
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	return cpu >= 0 ? cpu : prev_cpu;
}

static void enoki_cfifo_enqueue(struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p);
	s32 idle;

	scx_bpf_dispatch(p, cpu, enoki.slice_ns, enq_flags);
	/* the running task is about to sleep: this CPU runs @p next */
	if (xchg(per_cpu_ptr(&enoki_cfifo_handoff, cpu), false))
		return;
	/* an idle CPU is woken by the enqueue itself */
	if (idle_cpu(cpu))
		return;
	idle = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (idle >= 0)
		scx_bpf_kick_cpu(idle, SCX_KICK_IDLE);
}

/* The longest queue but @cpu's, or -1 when all are empty. */
static s32 enoki_cfifo_longest(s32 cpu)
{
	s32 other, best = -1, best_len = 0, len;

	for_each_online_cpu(other) {
		if (other == cpu)
			continue;
		len = enoki_cfifo_queued(other);
		if (len > best_len) {
			best = other;
			best_len = len;
		}
	}
	return best;
}

static void enoki_cfifo_dispatch(s32 cpu, struct task_struct *prev)
{
	s32 victim, other;

	if (enoki_cfifo_consume(cpu))
		return;
	victim = enoki_cfifo_longest(cpu);
	if (victim < 0 || scx_bpf_consume(victim))
		return;
	/* nothing there may run here: any queue with a task that may */
	for_each_online_cpu(other) {
		if (other != cpu && other != victim &&
		    enoki_cfifo_consume(other))
			return;
	}
}

static s32 enoki_cfifo_init(void)
{
	s32 cpu, ret;

	for_each_possible_cpu(cpu) {
		per_cpu(enoki_cfifo_handoff, cpu) = false;
		ret = scx_bpf_create_dsq(cpu, cpu_to_node(cpu));
		if (ret)
			return ret;
		per_cpu(enoki_cfifo_dsq, cpu) = find_user_dsq(cpu);
	}
	return 0;
}

static struct sched_ext_ops enoki_cfifo_scx_ops = {
	.select_cpu	= enoki_cfifo_select_cpu,
	.enqueue	= enoki_cfifo_enqueue,
	.dispatch	= enoki_cfifo_dispatch,
	.init		= enoki_cfifo_init,
	.exit		= enoki_note_exit,
	.exit_dump_len	= ENOKI_EXIT_DUMP_LEN,
	.name		= "enoki_cfifo",
};

/**
 * enoki_cfifo_register - load the C FIFO
 * @owner: the module that loads it (enoki_cfifo.ko)
 * @mode: ENOKI_MODE_ALL or ENOKI_MODE_OPT_IN, as for a scheduler module
 * @slice_ns: each pick's time slice (0: sched_ext's default)
 * @timeout_ms: sched_ext's watchdog (0: its default)
 *
 * Return: as enoki_register().
 */
int enoki_cfifo_register(struct module *owner, u32 mode, u64 slice_ns,
			 u32 timeout_ms)
{
	return enoki_register_native(&enoki_cfifo_scx_ops, "cfifo", owner,
				     mode, slice_ns, timeout_ms);
}
EXPORT_SYMBOL_GPL(enoki_cfifo_register);

/**
 * enoki_cfifo_unregister - stop the C FIFO if it runs; tasks go to CFS
 */
void enoki_cfifo_unregister(void)
{
	enoki_unregister_native(&enoki_cfifo_scx_ops);
}
EXPORT_SYMBOL_GPL(enoki_cfifo_unregister);
