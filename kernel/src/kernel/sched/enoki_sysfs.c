// SPDX-License-Identifier: GPL-2.0
/*
 * Enoki-C status files: /sys/kernel/enoki (the loaded scheduler, its
 * counters and errors, record control) and debugfs enoki/ (the record
 * trace, the topology schedulers see).
 *
 * Owns: the attributes and files; no state of its own.
 *
 * Locks: scheduler, module and upgrades are read under enoki_mutex,
 * which register, upgrade and unregister hold while they change them;
 * state, last_exit and the exit dump under enoki_status_lock, which
 * sched_ext's disable worker takes to set them; mode reads enoki.ops and
 * enoki.native with READ_ONCE(); counters are per-CPU sums read without a
 * lock; hint queues under enoki_queues_rwsem;
 * record control goes through enoki_record_set().
 *
 * May call: what enoki_record.c, enoki.c and enoki_hints.c define (build_policy.c
 * includes them before this file). Nothing else in Enoki-C calls it.
 */
#include <linux/debugfs.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

#include "enoki.h"

static u64 enoki_stat_sum(size_t offset)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += *(u64 *)((char *)per_cpu_ptr(&enoki_stats, cpu) + offset);
	return sum;
}

#define ENOKI_ATTR_RO(name)						\
static struct kobj_attribute enoki_attr_##name =			\
	__ATTR(name, 0444, enoki_##name##_show, NULL)

#define ENOKI_STAT_ATTR(field)						\
static ssize_t enoki_##field##_show(struct kobject *kobj,		\
				    struct kobj_attribute *attr,	\
				    char *buf)				\
{									\
	return sysfs_emit(buf, "%llu\n",				\
		enoki_stat_sum(offsetof(struct enoki_stats, field)));	\
}									\
ENOKI_ATTR_RO(field)

ENOKI_STAT_ATTR(pick_errors);
ENOKI_STAT_ATTR(balance_errors);
ENOKI_STAT_ATTR(select_errors);
ENOKI_STAT_ATTR(migrate_errors);
ENOKI_STAT_ATTR(rejected);

/* a string about the loaded scheduler, read under enoki_mutex */
#define ENOKI_STR_ATTR(name, value)					\
static ssize_t enoki_##name##_show(struct kobject *kobj,		\
				   struct kobj_attribute *attr,		\
				   char *buf)				\
{									\
	ssize_t ret;							\
									\
	mutex_lock(&enoki_mutex);					\
	ret = sysfs_emit(buf, "%s\n", value);				\
	mutex_unlock(&enoki_mutex);					\
	return ret;							\
}									\
ENOKI_ATTR_RO(name)

ENOKI_STR_ATTR(scheduler, enoki_loaded() ? enoki.name : "");
ENOKI_STR_ATTR(module, enoki_loaded() ? enoki.module : "");

static ssize_t enoki_last_exit_show(struct kobject *kobj,
				    struct kobj_attribute *attr, char *buf)
{
	ssize_t ret;

	spin_lock_irq(&enoki_status_lock);
	ret = sysfs_emit(buf, "%s\n", enoki.last_exit);
	spin_unlock_irq(&enoki_status_lock);
	return ret;
}
ENOKI_ATTR_RO(last_exit);

static ssize_t enoki_mode_show(struct kobject *kobj,
			       struct kobj_attribute *attr, char *buf)
{
	if (!enoki_loaded())
		return sysfs_emit(buf, "\n");
	return sysfs_emit(buf, "%s\n",
			  enoki.mode == ENOKI_MODE_OPT_IN ? "opt-in" : "all");
}
ENOKI_ATTR_RO(mode);

static ssize_t enoki_state_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	static const char * const names[] = {
		[ENOKI_NONE]	= "none",
		[ENOKI_ENABLED]	= "enabled",
		[ENOKI_EXITED]	= "exited",
		[ENOKI_EJECTED]	= "ejected",
	};
	enum enoki_state state;

	spin_lock_irq(&enoki_status_lock);
	state = enoki.state;
	spin_unlock_irq(&enoki_status_lock);
	return sysfs_emit(buf, "%s\n", names[state]);
}
ENOKI_ATTR_RO(state);

/* live upgrades since boot, and how long the calls were held off (ns) */
static ssize_t enoki_upgrades_show(struct kobject *kobj,
				   struct kobj_attribute *attr, char *buf)
{
	ssize_t ret;

	mutex_lock(&enoki_mutex);
	ret = sysfs_emit(buf, "upgrades %llu\nblackout_last_ns %llu\nblackout_max_ns %llu\n",
			 enoki.upgrades, enoki.blackout_last_ns,
			 enoki.blackout_max_ns);
	mutex_unlock(&enoki_mutex);
	return ret;
}
ENOKI_ATTR_RO(upgrades);

static ssize_t enoki_nr_tasks_show(struct kobject *kobj,
				   struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", max(atomic_read(&enoki_nr_tasks), 0));
}
ENOKI_ATTR_RO(nr_tasks);

static const char * const enoki_msg_names[ENOKI_MSG_NR] = {
	[ENOKI_TASK_NEW]		= "task_new",
	[ENOKI_TASK_WAKEUP]		= "task_wakeup",
	[ENOKI_TASK_PREEMPT]		= "task_preempt",
	[ENOKI_TASK_BLOCKED]		= "task_blocked",
	[ENOKI_TASK_DEAD]		= "task_dead",
	[ENOKI_TASK_TICK]		= "task_tick",
	[ENOKI_SELECT_TASK_RQ]		= "select_task_rq",
	[ENOKI_PICK_NEXT_TASK]		= "pick_next_task",
	[ENOKI_PNT_ERR]			= "pnt_err",
	[ENOKI_BALANCE]			= "balance",
	[ENOKI_BALANCE_ERR]		= "balance_err",
	[ENOKI_MIGRATE_TASK_RQ]		= "migrate_task_rq",
	[ENOKI_TASK_PRIO_CHANGED]	= "task_prio_changed",
	[ENOKI_TASK_AFFINITY_CHANGED]	= "task_affinity_changed",
	[ENOKI_CPU_ONLINE]		= "cpu_online",
	[ENOKI_CPU_OFFLINE]		= "cpu_offline",
	[ENOKI_CGROUP_NEW]		= "cgroup_new",
	[ENOKI_CGROUP_GONE]		= "cgroup_gone",
	[ENOKI_CGROUP_WEIGHT]		= "cgroup_weight",
	[ENOKI_TASK_CGROUP_MOVED]	= "task_cgroup_moved",
	[ENOKI_CGROUP_BANDWIDTH]	= "cgroup_bandwidth",
	[ENOKI_QUEUE_NEW]		= "queue_new",
	[ENOKI_HINT]			= "hint",
	[ENOKI_QUEUE_GONE]		= "queue_gone",
};

static ssize_t enoki_counters_show(struct kobject *kobj,
				   struct kobj_attribute *attr, char *buf)
{
	ssize_t len = 0;
	int kind;

	for (kind = ENOKI_TASK_NEW; kind < ENOKI_MSG_NR; kind++)
		len += sysfs_emit_at(buf, len, "%s %llu\n", enoki_msg_names[kind],
				     enoki_stat_sum(offsetof(struct enoki_stats,
							     msgs[kind])));
	len += sysfs_emit_at(buf, len, "timer_preempts %llu\n",
			     enoki_stat_sum(offsetof(struct enoki_stats,
						     timer_preempts)));
	return len;
}
ENOKI_ATTR_RO(counters);

/* @hints' counters after @len bytes of @buf, one "name count" each */
static ssize_t enoki_hints_emit(char *buf, ssize_t len, const char *sep,
				atomic64_t *hints)
{
	int i;

	for (i = 0; i < ENOKI_HINT_OUTCOMES; i++)
		len += sysfs_emit_at(buf, len, "%s%s %lld", i ? " " : "",
				     enoki_hint_outcome_names[i],
				     atomic64_read(&hints[i]));
	return len + sysfs_emit_at(buf, len, "%s", sep);
}

/*
 * Hint queues: the open ones, and what became of hints, all queues since
 * boot ("hints ...") and per open queue ("queue ID owner PID ...").
 */
static ssize_t enoki_hints_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct enoki_queue *q;
	unsigned long id;
	ssize_t len;
	int open = 0;

	down_read(&enoki_queues_rwsem);
	xa_for_each(&enoki_queues, id, q)
		open++;
	len = sysfs_emit(buf, "queues %d\nhints ", open);
	len = enoki_hints_emit(buf, len, "\n", enoki_hints);
	xa_for_each(&enoki_queues, id, q) {
		len += sysfs_emit_at(buf, len, "queue %u owner %d%s ", q->id,
				     q->owner, q->retired ? " retired" : "");
		len = enoki_hints_emit(buf, len, "\n", q->hints);
	}
	up_read(&enoki_queues_rwsem);
	return len;
}
ENOKI_ATTR_RO(hints);

/* record control; the rings and the trace file are enoki_record.c's */

static ssize_t enoki_record_show(struct kobject *kobj,
				 struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(enoki_recording));
}

static ssize_t enoki_record_store(struct kobject *kobj,
				  struct kobj_attribute *attr,
				  const char *buf, size_t count)
{
	bool on;
	int ret;

	ret = kstrtobool(buf, &on);
	if (ret)
		return ret;
	ret = enoki_record_set(on);
	return ret ?: count;
}

static struct kobj_attribute enoki_attr_record =
	__ATTR(record, 0644, enoki_record_show, enoki_record_store);

static ssize_t enoki_record_drops_show(struct kobject *kobj,
				       struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", enoki_record_drops());
}
ENOKI_ATTR_RO(record_drops);

/* each CPU's ring, in KiB, from the next start on */
static ssize_t enoki_record_buffer_kib_show(struct kobject *kobj,
					    struct kobj_attribute *attr,
					    char *buf)
{
	return sysfs_emit(buf, "%u\n", enoki_record_buffer_kib());
}

static ssize_t enoki_record_buffer_kib_store(struct kobject *kobj,
					     struct kobj_attribute *attr,
					     const char *buf, size_t count)
{
	u64 kib;
	int ret;

	ret = kstrtou64(buf, 0, &kib);
	if (ret)
		return ret;
	ret = enoki_record_resize(kib);
	return ret ?: count;
}

static struct kobj_attribute enoki_attr_record_buffer_kib =
	__ATTR(record_buffer_kib, 0644, enoki_record_buffer_kib_show,
	       enoki_record_buffer_kib_store);

static ssize_t enoki_abi_version_show(struct kobject *kobj,
				      struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", ENOKI_ABI_VERSION);
}
ENOKI_ATTR_RO(abi_version);

/* The topology a scheduler sees, as struct enoki_topology. */
static ssize_t enoki_topology_read(struct file *file, char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	struct enoki_topology *topo;
	ssize_t ret;

	topo = kvmalloc(sizeof(*topo), GFP_KERNEL);
	if (!topo)
		return -ENOMEM;
	ret = enoki_get_topology(topo);
	if (!ret)
		ret = simple_read_from_buffer(ubuf, count, ppos, topo,
					      sizeof(*topo));
	kvfree(topo);
	return ret;
}

static const struct file_operations enoki_topology_fops = {
	.owner	= THIS_MODULE,
	.read	= enoki_topology_read,
	.llseek	= default_llseek,
};

/* sched_ext's state dump from the last ejection */
static ssize_t enoki_exit_dump_read(struct file *file, char __user *ubuf,
				    size_t count, loff_t *ppos)
{
	size_t len;
	ssize_t ret;
	char *copy;

	copy = kvmalloc(ENOKI_EXIT_DUMP_LEN, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	spin_lock_irq(&enoki_status_lock);
	len = enoki.exit_dump_len;
	memcpy(copy, enoki_exit_dump, len);
	spin_unlock_irq(&enoki_status_lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, copy, len);
	kvfree(copy);
	return ret;
}

static const struct file_operations enoki_exit_dump_fops = {
	.owner	= THIS_MODULE,
	.read	= enoki_exit_dump_read,
	.llseek	= default_llseek,
};

static struct attribute *enoki_attrs[] = {
	&enoki_attr_scheduler.attr,
	&enoki_attr_module.attr,
	&enoki_attr_mode.attr,
	&enoki_attr_state.attr,
	&enoki_attr_nr_tasks.attr,
	&enoki_attr_pick_errors.attr,
	&enoki_attr_balance_errors.attr,
	&enoki_attr_select_errors.attr,
	&enoki_attr_migrate_errors.attr,
	&enoki_attr_rejected.attr,
	&enoki_attr_last_exit.attr,
	&enoki_attr_counters.attr,
	&enoki_attr_upgrades.attr,
	&enoki_attr_hints.attr,
	&enoki_attr_record.attr,
	&enoki_attr_record_drops.attr,
	&enoki_attr_record_buffer_kib.attr,
	&enoki_attr_abi_version.attr,
	NULL,
};

static const struct attribute_group enoki_attr_group = {
	.attrs = enoki_attrs,
};

static int __init enoki_sysfs_init(void)
{
	struct kobject *kobj;
	struct dentry *dir;
	int ret;

	kobj = kobject_create_and_add("enoki", kernel_kobj);
	if (!kobj)
		return -ENOMEM;
	ret = sysfs_create_group(kobj, &enoki_attr_group);
	if (ret) {
		kobject_put(kobj);
		return ret;
	}
	dir = debugfs_create_dir("enoki", NULL);
	debugfs_create_file("trace", 0400, dir, NULL, &enoki_trace_fops);
	debugfs_create_file("topology", 0444, dir, NULL, &enoki_topology_fops);
	debugfs_create_file("exit_dump", 0400, dir, NULL,
			    &enoki_exit_dump_fops);
	pr_info("enoki: ready (ABI %u)\n", ENOKI_ABI_VERSION);
	return 0;
}
late_initcall(enoki_sysfs_init);
