/* RFC 2822 dates as Dovecot's message_date_parse reads them: optional
 * weekday, day, month name (first three letters), 2- or 4-digit year,
 * hh:mm[:ss] ('.' also accepted), a zone (+hhmm, UT, GMT, [ECMP][SD]T,
 * military letters; unknown or missing: 0). Tokens are RFC 822 atoms,
 * comments and white space between them skipped. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "search_internal.h"

struct dtok {
    const unsigned char *p, *end;
};

static void skip_lwsp(struct dtok *t)
{
    int depth = 0;
    while (t->p < t->end) {
        unsigned char c = *t->p;
        if (depth > 0) {
            if (c == '\\' && t->p + 1 < t->end)
                t->p++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            t->p++;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            t->p++;
        } else if (c == '(') {
            depth = 1;
            t->p++;
        } else {
            break;
        }
    }
}

static bool atext(unsigned char c)
{
    return c >= 0x80 || isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Next atom: 1 with it, 0 at the end, -1 when something else is there. */
static int next_atom(struct dtok *t, const unsigned char **v, size_t *len)
{
    *len = 0;
    if (t->p >= t->end)
        return 0;
    const unsigned char *s = t->p;
    while (t->p < t->end && atext(*t->p))
        t->p++;
    *v = s;
    *len = (size_t)(t->p - s);
    skip_lwsp(t);
    return *len > 0 ? 1 : (t->p >= t->end ? 0 : -1);
}

static int zone(const unsigned char *s, size_t len)
{
    if (len == 5 && (s[0] == '+' || s[0] == '-')) {
        for (int i = 1; i < 5; i++)
            if (!isdigit(s[i]))
                return 0;
        int off = ((s[1] - '0') * 10 + (s[2] - '0')) * 60 + (s[3] - '0') * 10 + (s[4] - '0');
        return s[0] == '+' ? off : -off;
    }
    if (len == 1) {
        char c = (char)toupper(s[0]);
        if (c < 'J')
            return (s[0] - 'A' + 1) * 60;
        if (c == 'J')
            return 0;
        if (c <= 'M')
            return (s[0] - 'A') * 60;
        if (c < 'Z')
            return ('M' - s[0]) * 60;
        return 0;
    }
    if (len == 3 && s[2] == 'T') {
        int off;
        switch (toupper(s[0])) {
        case 'E': off = -5 * 60; break;
        case 'C': off = -6 * 60; break;
        case 'M': off = -7 * 60; break;
        case 'P': off = -8 * 60; break;
        default: return 0;
        }
        if (toupper(s[1]) == 'D')
            return off + 60;
        if (toupper(s[1]) == 'S')
            return off;
    }
    return 0;
}

static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int imap_search_date_parse(const char *value, size_t len, int64_t *t_r, int *tz_r)
{
    struct dtok t = {(const unsigned char *)value, (const unsigned char *)value + len};
    const unsigned char *v;
    size_t n;
    skip_lwsp(&t);
    if (next_atom(&t, &v, &n) <= 0)
        return 0;
    if (n == 3) { /* weekday */
        if (t.p >= t.end || *t.p != ',')
            return 0;
        t.p++;
        skip_lwsp(&t);
        if (next_atom(&t, &v, &n) <= 0)
            return 0;
    }
    if (n < 1 || n > 2 || !isdigit(v[0]) || (n == 2 && !isdigit(v[1])))
        return 0;
    int day = n == 2 ? (v[0] - '0') * 10 + (v[1] - '0') : v[0] - '0';
    if (next_atom(&t, &v, &n) <= 0 || n < 3)
        return 0;
    int month = -1;
    for (int i = 0; i < 12; i++)
        if (strncasecmp(mon[i], (const char *)v, 3) == 0) {
            month = i;
            break;
        }
    if (month < 0)
        return 0;
    if (next_atom(&t, &v, &n) <= 0 || (n != 2 && n != 4))
        return 0;
    int64_t year = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit(v[i]))
            return 0;
        year = year * 10 + (v[i] - '0');
    }
    if (n == 2)
        year += year < 70 ? 2000 : 1900;
    else if (year < 1900)
        return 0;
    if (next_atom(&t, &v, &n) <= 0 || n < 1 || n > 2 || !isdigit(v[0]) ||
        (n == 2 && !isdigit(v[1])))
        return 0;
    int hour = n == 2 ? (v[0] - '0') * 10 + (v[1] - '0') : v[0] - '0';
    if (t.p >= t.end || (*t.p != ':' && *t.p != '.'))
        return 0;
    t.p++;
    skip_lwsp(&t);
    if (next_atom(&t, &v, &n) < 0 || n != 2 || !isdigit(v[0]) || !isdigit(v[1]))
        return 0;
    int min = (v[0] - '0') * 10 + (v[1] - '0');
    int sec = 0;
    if (t.p < t.end && (*t.p == ':' || *t.p == '.')) {
        t.p++;
        skip_lwsp(&t);
        if (next_atom(&t, &v, &n) <= 0 || n != 2 || !isdigit(v[0]) || !isdigit(v[1]))
            return 0;
        sec = (v[0] - '0') * 10 + (v[1] - '0');
    }
    int r = next_atom(&t, &v, &n);
    if (r < 0)
        return 0;
    int tz = r == 0 ? 0 : zone(v, n);
    /* utc_mktime: out-of-range fields are refused */
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (day < 1 || day > mdays[month] || hour > 23 || min > 59 || sec > 60)
        return 0;
    if (month == 1 && day == 29 && !((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
        return 0;
    int64_t ts = search_days_from_civil(year, (unsigned)month + 1, (unsigned)day) * 86400 +
                 (int64_t)hour * 3600 + (int64_t)min * 60 + sec;
    *t_r = ts - (int64_t)tz * 60;
    *tz_r = tz;
    return 1;
}
