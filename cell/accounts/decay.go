package accounts

import (
	"math"
	"time"
)

// counts is a table of counts per key that halve every halfLife, holding at most
// max keys. Callers hold their own lock.
type counts struct {
	halfLife time.Duration
	max      int
	m        map[string]*count
}

type count struct {
	v  float64
	at time.Time
}

func newCounts(halfLife time.Duration, max int) *counts {
	return &counts{halfLife: halfLife, max: max, m: map[string]*count{}}
}

// get is key's count now.
func (c *counts) get(key string, now time.Time) float64 {
	n := c.m[key]
	if n == nil {
		return 0
	}
	if dt := now.Sub(n.at); dt > 0 {
		n.v *= math.Exp2(-float64(dt) / float64(c.halfLife))
		n.at = now
	}
	return n.v
}

// add adds one to key's count and returns it. When the table is full it first
// forgets the keys that have been quiet for minutes and, if that is not enough,
// those at or under the mean; keep (nil: none) names keys never to forget.
func (c *counts) add(key string, now time.Time, keep func(string) bool) float64 {
	v := c.get(key, now)
	n := c.m[key]
	if n == nil {
		if len(c.m) >= c.max {
			c.prune(now, keep)
		}
		n = &count{at: now}
		c.m[key] = n
	}
	n.v = v + 1
	return n.v
}

func (c *counts) prune(now time.Time, keep func(string) bool) {
	kept := func(k string) bool { return keep != nil && keep(k) }
	var sum float64
	for k := range c.m {
		v := c.get(k, now)
		if v < 0.05 && !kept(k) {
			delete(c.m, k)
			continue
		}
		sum += v
	}
	if len(c.m) < c.max*3/4 {
		return
	}
	mean := sum / float64(len(c.m))
	for k, n := range c.m {
		if n.v <= mean && !kept(k) {
			delete(c.m, k)
		}
	}
}
