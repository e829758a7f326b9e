// SPDX-License-Identifier: GPL-2.0
/*
 * enoki_cfifo.ko: loads Enoki-C's C FIFO (kernel/sched/enoki_cfifo.c), the
 * baseline schedulers/fifo is measured against, as `enoki load cfifo`.
 * The policy is built into the kernel because sched_ext's kfuncs are not
 * exported to modules; this module gives it the load, unload and module
 * parameters (mode, slice_us, watchdog_ms; enoki_params.c) of every other
 * Enoki scheduler.
 */
#include <linux/module.h>
#include <linux/string.h>

#include "enoki.h"
#include "enoki_params.h"

static int __init enoki_cfifo_init(void)
{
	u32 mode;

	if (!strcmp(enoki_param_mode, "all")) {
		mode = ENOKI_MODE_ALL;
	} else if (!strcmp(enoki_param_mode, "opt-in")) {
		mode = ENOKI_MODE_OPT_IN;
	} else {
		pr_err("enoki_cfifo: mode must be all or opt-in, not %s\n",
		       enoki_param_mode);
		return -EINVAL;
	}
	return enoki_cfifo_register(THIS_MODULE, mode,
				    (u64)enoki_param_slice_us * NSEC_PER_USEC,
				    enoki_param_watchdog_ms);
}

static void __exit enoki_cfifo_exit(void)
{
	enoki_cfifo_unregister();
}

module_init(enoki_cfifo_init);
module_exit(enoki_cfifo_exit);
MODULE_AUTHOR("Enoki");
MODULE_DESCRIPTION("Enoki scheduler cfifo");
MODULE_LICENSE("GPL");
