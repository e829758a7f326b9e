// SPDX-License-Identifier: GPL-2.0
/*
 * Enoki-C hint queues: /dev/enoki, through which applications hand the
 * running scheduler typed hints about their tasks (uapi/linux/enoki.h).
 *
 * Each open file is a queue the scheduler accepted (QUEUE_NEW); closing
 * it tells the scheduler (QUEUE_GONE). A hint is copied from userspace
 * once, checked (size, task, permission), and handed to the scheduler as
 * a HINT message through the call path, so it is recorded and replayed
 * like any other call.
 *
 * A queue belongs to the scheduler that accepted it and to the versions it
 * is live-upgraded to with the same hint type (hint_fp): those meet every
 * queue before they take over. Loading another scheduler, or upgrading to
 * other hint types, retires every queue: its hints fail with ENODEV.
 *
 * Owns: the queue list, each queue's counters and the global ones.
 *
 * Locks, outermost first (within enoki.c's order):
 *   enoki_mutex           open reads the running scheduler's hint type
 *                         under it; register and upgrade hold it
 *   enoki_queues_rwsem    readers send hints; writers change the list or
 *                         retire queues (open, close, register, upgrade),
 *                         so no hint is in flight while a scheduler whose
 *                         hints may differ takes over
 *   enoki_call_lock       around each message, as for every call
 *
 * May call: enoki.c's call path (build_policy.c includes this file after
 * it). enoki.c calls enoki_queues_retire() and enoki_queues_upgrade_*().
 */
#include <linux/cred.h>
#include <linux/idr.h>
#include <linux/miscdevice.h>
#include <linux/rwsem.h>
#include <linux/uaccess.h>
#include <uapi/linux/enoki.h>

#include "enoki.h"

static_assert(sizeof_field(struct enoki_msg, allowed) == ENOKI_HINT_MAX);
static_assert(ENOKI_NAME_LEN == ENOKI_NAME_MAX);

struct enoki_queue {
	struct list_head node;		/* in enoki_queues */
	u32 id;
	pid_t owner;			/* the thread that opened it */
	pid_t owner_tgid;
	u32 hint_size;
	u64 hint_fp;
	char scheduler[ENOKI_NAME_LEN];
	bool retired;			/* under enoki_queues_rwsem */
	atomic64_t hints[ENOKI_HINT_OUTCOMES];
};

/* as /sys/kernel/enoki/hints names them */
static const char *const enoki_hint_outcome_names[ENOKI_HINT_OUTCOMES] = {
	[ENOKI_HINT_TAKEN]		= "taken",
	[ENOKI_HINT_REJ_SIZE]		= "size",
	[ENOKI_HINT_REJ_TASK]		= "task",
	[ENOKI_HINT_REJ_OUTSIDE]	= "outside",
	[ENOKI_HINT_REJ_PERM]		= "permission",
	[ENOKI_HINT_REJ_REFUSED]	= "refused",
	[ENOKI_HINT_REJ_GONE]		= "gone",
};

static DECLARE_RWSEM(enoki_queues_rwsem);
static LIST_HEAD(enoki_queues);
static DEFINE_IDA(enoki_queue_ida);
static atomic64_t enoki_hints[ENOKI_HINT_OUTCOMES];

/* A message of @kind about @q. */
static void enoki_queue_msg_init(struct enoki_msg *msg, u32 kind,
				 const struct enoki_queue *q)
{
	enoki_msg_init(msg, kind, 0);
	msg->queue = q->id;
	msg->hint_size = q->hint_size;
	if (kind == ENOKI_QUEUE_NEW) {
		msg->pid = q->owner;
		msg->tgid = q->owner_tgid;
	}
}

/* Under enoki_mutex and enoki_queues_rwsem for writing. */
static int enoki_queue_accept(struct enoki_queue *q)
{
	const struct enoki_sched_ops *ops = enoki.ops;
	struct enoki_msg msg;

	if (!ops || READ_ONCE(enoki.state) != ENOKI_ENABLED)
		return -ENODEV;
	if (!enoki_handles(ops, ENOKI_QUEUE_NEW))
		return -EOPNOTSUPP;
	q->hint_size = ops->hint_size;
	q->hint_fp = ops->hint_fp;
	strscpy(q->scheduler, enoki.name, sizeof(q->scheduler));
	enoki_queue_msg_init(&msg, ENOKI_QUEUE_NEW, q);
	if (!enoki_call_from_process(&msg))
		return -ENODEV;
	return msg.ret < 0 ? msg.ret : 0;
}

static int enoki_queue_open(struct inode *inode, struct file *file)
{
	struct enoki_queue *q;
	int ret;

	q = kzalloc(sizeof(*q), GFP_KERNEL);
	if (!q)
		return -ENOMEM;
	ret = ida_alloc_min(&enoki_queue_ida, 1, GFP_KERNEL);
	if (ret < 0)
		goto free;
	q->id = ret;
	q->owner = task_pid_nr(current);
	q->owner_tgid = task_tgid_nr(current);
	mutex_lock(&enoki_mutex);
	down_write(&enoki_queues_rwsem);
	ret = enoki_queue_accept(q);
	if (!ret)
		list_add_tail(&q->node, &enoki_queues);
	up_write(&enoki_queues_rwsem);
	mutex_unlock(&enoki_mutex);
	if (ret)
		goto free_id;
	file->private_data = q;
	return 0;
free_id:
	ida_free(&enoki_queue_ida, q->id);
free:
	kfree(q);
	return ret;
}

static int enoki_queue_release(struct inode *inode, struct file *file)
{
	struct enoki_queue *q = file->private_data;
	struct enoki_msg msg;

	down_write(&enoki_queues_rwsem);
	list_del(&q->node);
	if (!q->retired && READ_ONCE(enoki.state) == ENOKI_ENABLED) {
		enoki_queue_msg_init(&msg, ENOKI_QUEUE_GONE, q);
		enoki_call_from_process(&msg);
	}
	up_write(&enoki_queues_rwsem);
	ida_free(&enoki_queue_ida, q->id);
	kfree(q);
	return 0;
}

/* May the caller steer @p? Its own user's tasks, or with CAP_SYS_NICE. */
static bool enoki_may_steer(struct task_struct *p)
{
	const struct cred *cred = current_cred(), *pcred;
	bool same;

	rcu_read_lock();
	pcred = __task_cred(p);
	same = uid_eq(cred->euid, pcred->euid) ||
	       uid_eq(cred->euid, pcred->uid);
	rcu_read_unlock();
	return same || has_capability_noaudit(current, CAP_SYS_NICE);
}

/* The task a hint names, with a reference, or NULL. */
static struct task_struct *enoki_hint_task(pid_t pid)
{
	struct task_struct *p;

	if (!pid)
		pid = task_pid_vnr(current);
	rcu_read_lock();
	p = find_task_by_vpid(pid);
	if (p)
		get_task_struct(p);
	rcu_read_unlock();
	return p;
}

/* Hands @h about @p to the scheduler: ENOKI_HINT_TAKEN or why not. */
static int enoki_hint_call(struct enoki_queue *q, const struct enoki_hint *h,
			   struct task_struct *p)
{
	struct enoki_msg msg;

	if (!task_on_scx(p) || scx_get_task_state(p) != SCX_TASK_ENABLED)
		return ENOKI_HINT_REJ_OUTSIDE;
	if (!enoki_may_steer(p))
		return ENOKI_HINT_REJ_PERM;
	enoki_queue_msg_init(&msg, ENOKI_HINT, q);
	msg.pid = READ_ONCE(p->scx.enoki_pid);
	msg.generation = READ_ONCE(p->scx.enoki_gen);
	msg.tgid = p->tgid;
	msg.task_cpu = task_cpu(p);
	memcpy(msg.allowed, h->data, h->size);
	if (!enoki_call_from_process(&msg))
		return ENOKI_HINT_REJ_GONE;
	return msg.ret < 0 ? ENOKI_HINT_REJ_REFUSED : ENOKI_HINT_TAKEN;
}

/* Checks @h and hands it on: ENOKI_HINT_TAKEN or why not. */
static int enoki_hint_send(struct enoki_queue *q, const struct enoki_hint *h)
{
	struct task_struct *p;
	int outcome;

	if (q->retired || READ_ONCE(enoki.state) != ENOKI_ENABLED)
		return ENOKI_HINT_REJ_GONE;
	if (h->size != q->hint_size)
		return ENOKI_HINT_REJ_SIZE;
	p = enoki_hint_task(h->pid);
	if (!p)
		return ENOKI_HINT_REJ_TASK;
	outcome = enoki_hint_call(q, h, p);
	put_task_struct(p);
	return outcome;
}

static const int enoki_hint_errno[ENOKI_HINT_OUTCOMES] = {
	[ENOKI_HINT_TAKEN]		= 0,
	[ENOKI_HINT_REJ_SIZE]		= -EINVAL,
	[ENOKI_HINT_REJ_TASK]		= -ESRCH,
	[ENOKI_HINT_REJ_OUTSIDE]	= -ESRCH,
	[ENOKI_HINT_REJ_PERM]		= -EPERM,
	[ENOKI_HINT_REJ_REFUSED]	= -EINVAL,
	[ENOKI_HINT_REJ_GONE]		= -ENODEV,
};

static long enoki_queue_hint(struct enoki_queue *q, void __user *arg)
{
	struct enoki_hint h;
	int outcome;

	/* read once: the checks and the scheduler see this copy only */
	if (copy_from_user(&h, arg, sizeof(h)))
		return -EFAULT;
	down_read(&enoki_queues_rwsem);
	outcome = enoki_hint_send(q, &h);
	up_read(&enoki_queues_rwsem);
	atomic64_inc(&q->hints[outcome]);
	atomic64_inc(&enoki_hints[outcome]);
	return enoki_hint_errno[outcome];
}

static long enoki_queue_info(struct enoki_queue *q, void __user *arg)
{
	struct enoki_queue_info info = {
		.abi_version = ENOKI_ABI_VERSION,
		.queue = q->id,
		.hint_fp = q->hint_fp,
		.hint_size = q->hint_size,
	};

	strscpy(info.scheduler, q->scheduler, sizeof(info.scheduler));
	return copy_to_user(arg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long enoki_queue_stats(struct enoki_queue *q, void __user *arg)
{
	struct enoki_queue_stats stats = { };
	int i;

	for (i = 0; i < ENOKI_HINT_OUTCOMES; i++)
		stats.hints[i] = atomic64_read(&q->hints[i]);
	return copy_to_user(arg, &stats, sizeof(stats)) ? -EFAULT : 0;
}

static long enoki_queue_ioctl(struct file *file, unsigned int cmd,
			      unsigned long arg)
{
	struct enoki_queue *q = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case ENOKI_IOC_HINT:
		return enoki_queue_hint(q, uarg);
	case ENOKI_IOC_INFO:
		return enoki_queue_info(q, uarg);
	case ENOKI_IOC_STATS:
		return enoki_queue_stats(q, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations enoki_queue_fops = {
	.owner		= THIS_MODULE,
	.open		= enoki_queue_open,
	.release	= enoki_queue_release,
	.unlocked_ioctl	= enoki_queue_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

static struct miscdevice enoki_queue_dev = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "enoki",
	.fops	= &enoki_queue_fops,
	.mode	= 0666,
};

/*
 * Every queue is retired: another scheduler takes over. Called with
 * enoki_mutex held, before it does.
 */
static void enoki_queues_retire(void)
{
	struct enoki_queue *q;

	down_write(&enoki_queues_rwsem);
	list_for_each_entry(q, &enoki_queues, node)
		q->retired = true;
	up_write(&enoki_queues_rwsem);
}

/* Do the queues of the running scheduler outlive an upgrade to @ops? */
static bool enoki_queues_carried(const struct enoki_sched_ops *old,
				 const struct enoki_sched_ops *ops)
{
	return enoki_handles(ops, ENOKI_QUEUE_NEW) &&
	       old->hint_fp == ops->hint_fp && old->hint_size == ops->hint_size;
}

/*
 * An upgrade from @old to @ops starts: the queues that outlive it meet
 * @ops, which must accept each. Returns with enoki_queues_rwsem held for
 * writing (no hint in flight, no queue opened or closed) until
 * enoki_queues_upgrade_end(); 0, or -EPERM if @ops refused a queue.
 */
static int enoki_queues_upgrade_begin(const struct enoki_sched_ops *old,
				      const struct enoki_sched_ops *ops)
{
	struct enoki_queue *q;
	struct enoki_msg msg;
	unsigned long flags;

	down_write(&enoki_queues_rwsem);
	if (!enoki_queues_carried(old, ops))
		return 0;
	list_for_each_entry(q, &enoki_queues, node) {
		if (q->retired)
			continue;
		enoki_queue_msg_init(&msg, ENOKI_QUEUE_NEW, q);
		local_irq_save(flags);
		msg.cpu = smp_processor_id();
		ops->process(ops->sched, &msg);
		local_irq_restore(flags);
		if (msg.ret < 0) {
			pr_err("enoki: %s refused hint queue %u of %s\n",
			       ops->name, q->id, old->name);
			return -EPERM;
		}
	}
	return 0;
}

/* The upgrade is over (@done: @ops took over from @old). */
static void enoki_queues_upgrade_end(const struct enoki_sched_ops *old,
				     const struct enoki_sched_ops *ops,
				     bool done)
{
	struct enoki_queue *q;

	if (done && !enoki_queues_carried(old, ops))
		list_for_each_entry(q, &enoki_queues, node)
			q->retired = true;
	up_write(&enoki_queues_rwsem);
}

static int __init enoki_hints_init(void)
{
	return misc_register(&enoki_queue_dev);
}
late_initcall(enoki_hints_init);
