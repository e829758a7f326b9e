// SPDX-License-Identifier: GPL-2.0
/*
 * Enoki-C hint queues: /dev/enoki, through which applications hand the
 * running scheduler typed hints about their tasks (uapi/linux/enoki.h).
 *
 * Each open file is a queue the scheduler accepted (QUEUE_NEW); closing
 * it tells the scheduler (QUEUE_GONE). A hint is copied from userspace
 * once, checked (size, task, permission), and handed to the scheduler as
 * a HINT message through the call path, so it is recorded and replayed
 * like any other call. Hints come one per ioctl, or in batches through a
 * ring the application maps and a doorbell ioctl; the scheduler answers
 * through a second ring (reverse hints), written under the call path and
 * announced to pollers from an irq_work, so that no wakeup is made under
 * a runqueue lock.
 *
 * A queue belongs to the scheduler that accepted it and to the versions it
 * is live-upgraded to with the same hint type (hint_fp): those meet every
 * queue before they take over. Loading another scheduler, or upgrading to
 * other hint types, retires every queue: its hints fail with ENODEV.
 *
 * Owns: the queues (by id), their rings, each queue's counters and the
 * global ones.
 *
 * Locks, outermost first (within enoki.c's order):
 *   enoki_mutex           open reads the running scheduler's hint type
 *                         under it; register and upgrade hold it
 *   enoki_queues_rwsem    readers send hints; writers change the list or
 *                         retire queues (open, close, register, upgrade),
 *                         so no hint is in flight while a scheduler whose
 *                         hints may differ takes over
 *   q->enter_lock         one doorbell at a time per queue (taken before
 *                         enoki_queues_rwsem)
 *   enoki_call_lock       around each message, as for every call
 *   q->rev_lock           a reverse hint's producers, from the scheduler
 *                         (inside its locks); a leaf
 * A reverse hint finds its queue under RCU: a closed queue is freed after
 * a grace period and once its irq_work is done.
 *
 * May call: enoki.c's call path (build_policy.c includes this file after
 * it). enoki.c calls enoki_queues_retire() and enoki_queues_upgrade_*().
 * The ring walk and the checks on each copied hint are in
 * enoki_hint_ring.h, apart from tasks and locks, so that a host fuzzer
 * (kernel/fuzz/) runs the very code the kernel does.
 */
#include <linux/cred.h>
#include <linux/irq_work.h>
#include <linux/miscdevice.h>
#include <linux/poll.h>
#include <linux/rwsem.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>
#include <uapi/linux/enoki.h>

#include "enoki.h"
#include "enoki_hint_ring.h"

static_assert(sizeof_field(struct enoki_msg, allowed) == ENOKI_HINT_MAX);
static_assert(ENOKI_NAME_LEN == ENOKI_NAME_MAX);

struct enoki_queue {
	u32 id;				/* in enoki_queues */
	pid_t owner;			/* the thread that opened it */
	pid_t owner_tgid;
	u32 hint_size;
	u64 hint_fp;
	u32 rev_hint_size;
	u64 rev_hint_fp;
	char scheduler[ENOKI_NAME_LEN];
	bool retired;			/* under enoki_queues_rwsem */
	atomic64_t hints[ENOKI_HINT_OUTCOMES];
	/*
	 * Shared with userspace, which may write anything there at any
	 * time: the kernel keeps its own consumer and producer index.
	 */
	struct enoki_hint_rings *rings;
	struct mutex enter_lock;
	u32 to_kernel_head;		/* under enter_lock */
	raw_spinlock_t rev_lock;
	u32 to_user_tail;		/* under rev_lock */
	u32 rev_dropped;		/* under rev_lock */
	struct irq_work rev_work;
	wait_queue_head_t rev_wait;
	struct rcu_work free_work;
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
	[ENOKI_HINT_REJ_RING]		= "ring",
};

static DECLARE_RWSEM(enoki_queues_rwsem);
/* written under enoki_queues_rwsem; looked up under RCU */
static DEFINE_XARRAY_ALLOC1(enoki_queues);
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
	q->rev_hint_size = ops->rev_hint_size;
	q->rev_hint_fp = ops->rev_hint_fp;
	strscpy(q->scheduler, enoki.name, sizeof(q->scheduler));
	enoki_queue_msg_init(&msg, ENOKI_QUEUE_NEW, q);
	if (!enoki_call_from_process(&msg))
		return -ENODEV;
	return msg.ret < 0 ? msg.ret : 0;
}

static void enoki_queue_wake(struct irq_work *work)
{
	struct enoki_queue *q = container_of(work, struct enoki_queue, rev_work);

	wake_up_interruptible(&q->rev_wait);
}

static void enoki_queue_free(struct work_struct *work)
{
	struct enoki_queue *q = container_of(to_rcu_work(work),
					     struct enoki_queue, free_work);

	irq_work_sync(&q->rev_work);
	vfree(q->rings);
	kfree(q);
}

static struct enoki_queue *enoki_queue_alloc(void)
{
	struct enoki_queue *q;

	q = kzalloc(sizeof(*q), GFP_KERNEL);
	if (!q)
		return NULL;
	q->rings = vmalloc_user(sizeof(*q->rings));
	if (!q->rings) {
		kfree(q);
		return NULL;
	}
	q->rings->to_kernel.entries = ENOKI_RING_ENTRIES;
	q->rings->to_user.entries = ENOKI_RING_ENTRIES;
	q->owner = task_pid_nr(current);
	q->owner_tgid = task_tgid_nr(current);
	mutex_init(&q->enter_lock);
	raw_spin_lock_init(&q->rev_lock);
	init_irq_work(&q->rev_work, enoki_queue_wake);
	init_waitqueue_head(&q->rev_wait);
	INIT_RCU_WORK(&q->free_work, enoki_queue_free);
	return q;
}

static int enoki_queue_open(struct inode *inode, struct file *file)
{
	struct enoki_queue *q;
	int ret;

	q = enoki_queue_alloc();
	if (!q)
		return -ENOMEM;
	mutex_lock(&enoki_mutex);
	down_write(&enoki_queues_rwsem);
	ret = xa_alloc(&enoki_queues, &q->id, q, xa_limit_31b, GFP_KERNEL);
	if (!ret) {
		ret = enoki_queue_accept(q);
		if (ret)
			xa_erase(&enoki_queues, q->id);
	}
	up_write(&enoki_queues_rwsem);
	mutex_unlock(&enoki_mutex);
	if (ret) {
		vfree(q->rings);
		kfree(q);
		return ret;
	}
	file->private_data = q;
	return 0;
}

static int enoki_queue_release(struct inode *inode, struct file *file)
{
	struct enoki_queue *q = file->private_data;
	struct enoki_msg msg;

	down_write(&enoki_queues_rwsem);
	xa_erase(&enoki_queues, q->id);
	if (!q->retired && READ_ONCE(enoki.state) == ENOKI_ENABLED) {
		enoki_queue_msg_init(&msg, ENOKI_QUEUE_GONE, q);
		enoki_call_from_process(&msg);
	}
	up_write(&enoki_queues_rwsem);
	/* after every reverse hint that may have found it */
	queue_rcu_work(system_wq, &q->free_work);
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

static bool enoki_queue_gone(void *arg)
{
	struct enoki_queue *q = arg;

	return q->retired || READ_ONCE(enoki.state) != ENOKI_ENABLED;
}

/* @h passed enoki_hint_check()'s checks: ENOKI_HINT_TAKEN or why not. */
static int enoki_hint_deliver(void *arg, const struct enoki_hint *h)
{
	struct enoki_queue *q = arg;
	struct task_struct *p;
	int outcome;

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
	[ENOKI_HINT_REJ_RING]		= -EINVAL,
};

static void enoki_hint_count(void *arg, int outcome)
{
	struct enoki_queue *q = arg;

	atomic64_inc(&q->hints[outcome]);
	atomic64_inc(&enoki_hints[outcome]);
}

static void enoki_queues_read_lock(void *arg)
{
	down_read(&enoki_queues_rwsem);
}

static void enoki_queues_read_unlock(void *arg)
{
	up_read(&enoki_queues_rwsem);
}

/* Where @q's hints go once copied: the checks, then the scheduler. */
static struct enoki_hint_sink enoki_queue_sink(struct enoki_queue *q)
{
	return (struct enoki_hint_sink) {
		.arg		= q,
		.hint_size	= q->hint_size,
		.gone		= enoki_queue_gone,
		.deliver	= enoki_hint_deliver,
		.count		= enoki_hint_count,
		.lock		= enoki_queues_read_lock,
		.unlock		= enoki_queues_read_unlock,
	};
}

static long enoki_queue_hint(struct enoki_queue *q, void __user *arg)
{
	struct enoki_hint_sink sink = enoki_queue_sink(q);
	struct enoki_hint h;
	int outcome;

	/* read once: the checks and the scheduler see this copy only */
	if (copy_from_user(&h, arg, sizeof(h)))
		return -EFAULT;
	down_read(&enoki_queues_rwsem);
	outcome = enoki_hint_check(&sink, &h);
	up_read(&enoki_queues_rwsem);
	enoki_hint_count(q, outcome);
	return enoki_hint_errno[outcome];
}

/*
 * The doorbell: every hint in the to_kernel ring, in order. Returns how
 * many the scheduler took, or -EINVAL when the ring's tail is nonsense.
 */
static long enoki_queue_enter(struct enoki_queue *q)
{
	struct enoki_hint_sink sink = enoki_queue_sink(q);
	long taken;

	mutex_lock(&q->enter_lock);
	taken = enoki_hint_ring_enter(&q->rings->to_kernel, &q->to_kernel_head,
				      &sink);
	mutex_unlock(&q->enter_lock);
	return taken;
}

/**
 * enoki_send_rev_hint - a scheduler's reverse hint to a queue's owner
 * @queue: the queue
 * @pid: the task it is about, or 0
 * @hint: @size bytes, the scheduler's reverse hint size
 * @size: its size
 *
 * From the scheduler's calls (interrupts off). Dropped, and counted in the
 * ring, when the ring is full; ignored for a closed or retired queue.
 */
void enoki_send_rev_hint(u32 queue, s32 pid, const void *hint, u32 size)
{
	struct enoki_queue *q;
	unsigned long flags;

	rcu_read_lock();
	q = xa_load(&enoki_queues, queue);
	if (!q || READ_ONCE(q->retired) || size != q->rev_hint_size)
		goto out;
	raw_spin_lock_irqsave(&q->rev_lock, flags);
	enoki_hint_ring_put(&q->rings->to_user, &q->to_user_tail,
			    &q->rev_dropped, pid, hint, size);
	raw_spin_unlock_irqrestore(&q->rev_lock, flags);
	irq_work_queue(&q->rev_work);
out:
	rcu_read_unlock();
}
EXPORT_SYMBOL_GPL(enoki_send_rev_hint);

static __poll_t enoki_queue_poll(struct file *file, poll_table *wait)
{
	struct enoki_queue *q = file->private_data;

	poll_wait(file, &q->rev_wait, wait);
	if (READ_ONCE(q->to_user_tail) != READ_ONCE(q->rings->to_user.head))
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

/* Maps the rings: the whole of them, read and write, never executable. */
static int enoki_queue_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct enoki_queue *q = file->private_data;

	if (vma->vm_pgoff || vma->vm_flags & VM_EXEC)
		return -EINVAL;
	vm_flags_clear(vma, VM_MAYEXEC);
	return remap_vmalloc_range(vma, q->rings, 0);
}

static long enoki_queue_info(struct enoki_queue *q, void __user *arg)
{
	struct enoki_queue_info info = {
		.abi_version = ENOKI_ABI_VERSION,
		.queue = q->id,
		.hint_fp = q->hint_fp,
		.hint_size = q->hint_size,
		.rev_hint_fp = q->rev_hint_fp,
		.rev_hint_size = q->rev_hint_size,
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
	case ENOKI_IOC_ENTER:
		return enoki_queue_enter(q);
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
	.poll		= enoki_queue_poll,
	.mmap		= enoki_queue_mmap,
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
	unsigned long id;

	down_write(&enoki_queues_rwsem);
	xa_for_each(&enoki_queues, id, q)
		WRITE_ONCE(q->retired, true);
	up_write(&enoki_queues_rwsem);
}

/* Do the queues of the running scheduler outlive an upgrade to @ops? */
static bool enoki_queues_carried(const struct enoki_sched_ops *old,
				 const struct enoki_sched_ops *ops)
{
	return enoki_handles(ops, ENOKI_QUEUE_NEW) &&
	       old->hint_fp == ops->hint_fp && old->hint_size == ops->hint_size &&
	       old->rev_hint_fp == ops->rev_hint_fp &&
	       old->rev_hint_size == ops->rev_hint_size;
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
	unsigned long flags, id;

	down_write(&enoki_queues_rwsem);
	if (!enoki_queues_carried(old, ops))
		return 0;
	xa_for_each(&enoki_queues, id, q) {
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
	unsigned long id;

	if (done && !enoki_queues_carried(old, ops))
		xa_for_each(&enoki_queues, id, q)
			WRITE_ONCE(q->retired, true);
	up_write(&enoki_queues_rwsem);
}

static int __init enoki_hints_init(void)
{
	return misc_register(&enoki_queue_dev);
}
late_initcall(enoki_hints_init);
