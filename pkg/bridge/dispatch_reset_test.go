package bridge

import (
	"testing"
	"time"
)

// TestResetDelay: resets come every second while walking is cheap, less
// often as it gets costly, and never further apart than maxResetEvery, so
// an event put back behind a cursor is found within that.
func TestResetDelay(t *testing.T) {
	for _, c := range []struct {
		walked, want time.Duration
	}{
		{0, time.Second},
		{20 * time.Millisecond, time.Second},
		{100 * time.Millisecond, 2 * time.Second},
		{200 * time.Millisecond, 4 * time.Second},
		{1750 * time.Millisecond, maxResetEvery},
		{time.Minute, maxResetEvery},
	} {
		if got := resetDelay(c.walked); got != c.want {
			t.Errorf("resetDelay(%s) = %s, want %s", c.walked, got, c.want)
		}
	}
}
