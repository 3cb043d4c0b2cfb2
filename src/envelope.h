/*
 * envelope.h
 *		The JSON object sent for one change (envelope.c): webhook._render,
 *		which the worker's expansion calls directly too.
 */
#ifndef WEBHOOK_ENVELOPE_H
#define WEBHOOK_ENVELOPE_H

#include "postgres.h"

#include "fmgr.h"

/* The arguments of webhook._render, by name: a caller in C sets them so. */
typedef enum RenderArg
{
	RENDER_ID,
	RENDER_PROFILE,
	RENDER_PAYLOAD,
	RENDER_FIELDS,
	RENDER_BINDING,
	RENDER_EVENT,
	RENDER_TITLE,
	RENDER_OBJECT,
	RENDER_TABLE,
	RENDER_KEY_COLUMNS,
	RENDER_CAPTURED_AT,
	RENDER_OPERATION,
	RENDER_ROW,
	RENDER_OLD_ROW,
	RENDER_NEW_ROW,
	RENDER_PARENT_OBJECT,
	RENDER_PARENT_TABLE,
	RENDER_PARENT_COLUMN,
	RENDER_PARENT_KEY,
	RENDER_READER,
	RENDER_ENVELOPE,
	RENDER_PROFILE_GUID,
	RENDER_CHANGE_ID,
	RENDER_MESSAGE,
	RENDER_AGENT_COLUMN,
	RENDER_NARGS
} RenderArg;

extern Datum webhook_render(PG_FUNCTION_ARGS);

#endif							/* WEBHOOK_ENVELOPE_H */
