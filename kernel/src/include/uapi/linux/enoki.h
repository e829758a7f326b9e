/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * Enoki hint queues: how applications talk to the running Enoki scheduler.
 *
 * Opening /dev/enoki creates a queue; the scheduler accepts it or the open
 * fails (ENODEV: no Enoki scheduler runs; EOPNOTSUPP: it takes no hints;
 * ENOSPC: it has no room for another queue). Closing the file closes it.
 *
 * ENOKI_IOC_INFO says what the queue's scheduler expects: a hint is
 * hint_size bytes of a type named by hint_fp (libEnoki's fingerprint of
 * its definition), so a typed sender can check it speaks the same type.
 *
 * ENOKI_IOC_HINT hands one hint about task @pid (0: the caller) to the
 * scheduler, synchronously. The kernel copies the entry once, then checks
 * it; each refusal is counted per queue and in /sys/kernel/enoki/hints:
 *   EINVAL   size differs from hint_size (ENOKI_HINT_REJ_SIZE), or the
 *            scheduler found the values wrong (ENOKI_HINT_REJ_REFUSED)
 *   ESRCH    no such task (ENOKI_HINT_REJ_TASK), or it is not scheduled
 *            by Enoki (ENOKI_HINT_REJ_OUTSIDE)
 *   EPERM    the caller may not steer it: another user's task and no
 *            CAP_SYS_NICE (ENOKI_HINT_REJ_PERM)
 *   ENODEV   the scheduler the queue was made for is gone, or was
 *            upgraded to one with other hint types (ENOKI_HINT_REJ_GONE)
 *
 * ENOKI_IOC_STATS reads the queue's counters.
 *
 * Batched hints and the scheduler's answers go through two rings shared
 * with the kernel: mmap() the queue's file (offset 0, sizeof(struct
 * enoki_hint_rings)). In each ring the producer writes entries, then
 * advances @tail (a release store); the consumer reads entries from @head
 * to @tail, then advances @head. Indices run free; entry i is hint[i % entries].
 *   to_kernel  the application produces hints, then rings the doorbell,
 *              ENOKI_IOC_ENTER: the kernel consumes every entry, copying
 *              each once before checking it, and returns how many it
 *              took; refusals are counted as for ENOKI_IOC_HINT. Indices
 *              that make no sense (more entries than the ring holds) are
 *              refused as a whole (counted once, ENOKI_HINT_REJ_RING) and
 *              the ring emptied.
 *   to_user    the scheduler produces reverse hints (hint_size is then
 *              the scheduler's reverse hint size, pid the task they are
 *              about, or 0); poll() says POLLIN while the ring holds some.
 *              When it is full the kernel drops the new entry and counts
 *              it in @dropped.
 */
#ifndef _UAPI_LINUX_ENOKI_H
#define _UAPI_LINUX_ENOKI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define ENOKI_HINT_MAX		32
#define ENOKI_NAME_MAX		32

struct enoki_queue_info {
	__u32 abi_version;
	__u32 queue;
	__u64 hint_fp;
	__u32 hint_size;
	__u32 rev_hint_size;
	__u64 rev_hint_fp;
	char scheduler[ENOKI_NAME_MAX];
};

struct enoki_hint {
	__s32 pid;
	__u32 size;
	__u8 data[ENOKI_HINT_MAX];
};

/* what became of hints: taken, or why not (REJ_RING: not read at all) */
#define ENOKI_HINT_TAKEN		0
#define ENOKI_HINT_REJ_SIZE		1
#define ENOKI_HINT_REJ_TASK		2
#define ENOKI_HINT_REJ_OUTSIDE		3
#define ENOKI_HINT_REJ_PERM		4
#define ENOKI_HINT_REJ_REFUSED		5
#define ENOKI_HINT_REJ_GONE		6
#define ENOKI_HINT_REJ_RING		7
#define ENOKI_HINT_OUTCOMES		8

struct enoki_queue_stats {
	__u64 hints[ENOKI_HINT_OUTCOMES];
};

#define ENOKI_RING_ENTRIES	64

struct enoki_hint_ring {
	__u32 head;
	__u32 tail;
	__u32 entries;		/* ENOKI_RING_ENTRIES */
	__u32 dropped;
	struct enoki_hint hint[ENOKI_RING_ENTRIES];
};

struct enoki_hint_rings {
	struct enoki_hint_ring to_kernel;
	struct enoki_hint_ring to_user;
};

#define ENOKI_IOC_MAGIC		0xEB
#define ENOKI_IOC_INFO		_IOR(ENOKI_IOC_MAGIC, 0, struct enoki_queue_info)
#define ENOKI_IOC_HINT		_IOW(ENOKI_IOC_MAGIC, 1, struct enoki_hint)
#define ENOKI_IOC_STATS		_IOR(ENOKI_IOC_MAGIC, 2, struct enoki_queue_stats)
#define ENOKI_IOC_ENTER		_IO(ENOKI_IOC_MAGIC, 3)

#endif /* _UAPI_LINUX_ENOKI_H */
