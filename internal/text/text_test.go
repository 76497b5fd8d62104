package text

import "testing"

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"listen", "listen", 0}, {"", "abc", 3}, {"concurency", "concurrency", 1},
		{"timeuot", "timeout", 2}, {"kitten", "sitting", 3}, {"héllo", "hello", 1},
	} {
		if got := Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := Distance(tc.b, tc.a); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := OneLine("a\n  b\tc ", 10); got != "a b c" {
		t.Errorf("got %q", got)
	}
	if got := OneLine("ééééé", 3); got != "ééé…" {
		t.Errorf("cut by runes: got %q", got)
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable([]byte("ok\x1b[31m\x7f\xff\nx"), 100); got != "ok?[31m??\nx" {
		t.Errorf("got %q", got)
	}
	if got := Printable([]byte("abcdef"), 3); got != "abc" {
		t.Errorf("got %q", got)
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{{"abcdef", 6, "abcdef"}, {"abcdef", 4, "abc…"}, {"ééé", 2, "é…"}, {"abc", 0, ""}} {
		if got := Cut(tc.s, tc.n); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"dify.timeout", "dify.idle_timeout", "listen"}
	if got := Closest("dify.timout", keys, 2); got != "dify.timeout" {
		t.Errorf("got %q", got)
	}
	if got := Closest("database", keys, 2); got != "" {
		t.Errorf("nothing near: got %q", got)
	}
	if got := Closest("lisen", []string{"listen", "liste"}, 2); got != "listen" {
		t.Errorf("equals: want the first, got %q", got)
	}
}
