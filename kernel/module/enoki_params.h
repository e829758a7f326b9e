/* SPDX-License-Identifier: GPL-2.0 */
/* The module parameters enoki_params.c declares, for C scheduler modules. */
#ifndef _ENOKI_PARAMS_H
#define _ENOKI_PARAMS_H

extern char *enoki_param_mode;
extern unsigned int enoki_param_slice_us;
extern unsigned int enoki_param_watchdog_ms;

#endif /* _ENOKI_PARAMS_H */
