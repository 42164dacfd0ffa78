/* A small string-keyed hash table for the policy indexes.
 *
 * Open addressing with linear probing, sized once for the number of rules
 * (load factor at most 1/2), then only read. Lookup keys come from mail
 * (recipient addresses) but nothing is ever inserted at run time, so the
 * probe sequences are fixed by the administrator's file and cannot be
 * lengthened by a sender; FNV-1a is enough. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint64_t pol_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int pol_table_init(struct pol_table *t, size_t n)
{
    t->n = 0;
    t->slots = NULL;
    t->cap = 0;
    if (n == 0)
        return 0;
    size_t cap = 8;
    while (cap < n * 2) {
        if (cap > SIZE_MAX / 4 / sizeof(struct pol_slot))
            return -1;
        cap *= 2;
    }
    t->slots = calloc(cap, sizeof(*t->slots));
    if (!t->slots)
        return -1;
    t->cap = cap;
    return 0;
}

const void *pol_table_put(struct pol_table *t, const char *key, const void *val)
{
    size_t n = strlen(key);
    uint64_t h = pol_hash(key, n);
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        struct pol_slot *s = &t->slots[i];
        if (!s->key) {
            s->key = key;
            s->val = val;
            s->hash = h;
            t->n++;
            return NULL;
        }
        if (s->hash == h && strcmp(s->key, key) == 0)
            return s->val;
    }
}

const void *pol_table_get(const struct pol_table *t, const char *key, size_t n)
{
    if (t->cap == 0)
        return NULL;
    uint64_t h = pol_hash(key, n);
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const struct pol_slot *s = &t->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == h && strncmp(s->key, key, n) == 0 && s->key[n] == '\0')
            return s->val;
    }
}

void pol_table_free(struct pol_table *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}

/* ---- arena ---- */

struct pol_chunk {
    struct pol_chunk *next;
    size_t used, cap;
    char data[];
};

#define CHUNK_SIZE ((size_t)64 << 10)

char *pol_arena_strndup(struct pol_arena *a, const char *s, size_t n)
{
    if (n >= SIZE_MAX - sizeof(struct pol_chunk) - 1)
        return NULL;
    struct pol_chunk *c = a->head;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > CHUNK_SIZE ? n + 1 : CHUNK_SIZE;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    char *p = c->data + c->used;
    memcpy(p, s, n);
    p[n] = '\0';
    c->used += n + 1;
    return p;
}

void pol_arena_free(struct pol_arena *a)
{
    for (struct pol_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
}
