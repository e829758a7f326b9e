// SPDX-License-Identifier: GPL-2.0
/*
 * Module parameters of an Enoki scheduler module, linked into every one and
 * read by libEnoki's kernel backend at init (Rust modules in 6.12 cannot
 * declare parameters themselves). libEnoki validates the ranges.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>

/*
 * The build id of the vmlinux this module was compiled against (the module
 * build passes it in). The kernel checks only the release, which two builds
 * of one release share, so `enoki load` compares this with the running
 * kernel's build id before loading.
 */
MODULE_INFO(kernel_build_id, ENOKI_KERNEL_BUILD_ID);

char *enoki_param_mode = "all";
module_param_named(mode, enoki_param_mode, charp, 0444);
MODULE_PARM_DESC(mode, "all: every normal task; opt-in: only SCHED_EXT (7) tasks");

unsigned int enoki_param_max_tasks = 4096;
module_param_named(max_tasks, enoki_param_max_tasks, uint, 0444);
MODULE_PARM_DESC(max_tasks, "most tasks the scheduler holds (16..1048576)");

unsigned int enoki_param_slice_us = 3000;
module_param_named(slice_us, enoki_param_slice_us, uint, 0444);
MODULE_PARM_DESC(slice_us, "default time slice in microseconds (50..1000000)");

unsigned int enoki_param_watchdog_ms = 10000;
module_param_named(watchdog_ms, enoki_param_watchdog_ms, uint, 0444);
MODULE_PARM_DESC(watchdog_ms, "eject the scheduler when a task waits this long (500..30000)");

char *enoki_param_args = "";
module_param_named(args, enoki_param_args, charp, 0444);
MODULE_PARM_DESC(args, "scheduler-specific key=value,... settings");

unsigned int enoki_param_lock_timeout_ms;
module_param_named(lock_timeout_ms, enoki_param_lock_timeout_ms, uint, 0444);
MODULE_PARM_DESC(lock_timeout_ms, "fail a lock wait or a call this long and eject the scheduler (1..watchdog_ms/2; 0: 1000, at most watchdog_ms/2)");

char *enoki_param_upgrade = "";
module_param_named(upgrade, enoki_param_upgrade, charp, 0444);
MODULE_PARM_DESC(upgrade, "replace the running scheduler live: state (carry its state over when both have the same) or fresh (start from the task list)");
