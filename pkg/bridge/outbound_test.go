package bridge

import (
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/store"
)

func TestSplitMessage(t *testing.T) {
	para := func(n int, word string) string { return strings.TrimSpace(strings.Repeat(word+" ", n)) }
	for _, tc := range []struct {
		name  string
		text  string
		limit int
		check func(t *testing.T, parts []string)
	}{
		{"fits", "short answer", 100, func(t *testing.T, p []string) {
			if len(p) != 1 || p[0] != "short answer" {
				t.Errorf("%q", p)
			}
		}},
		{"no limit", strings.Repeat("x", 10000), 0, func(t *testing.T, p []string) {
			if len(p) != 1 {
				t.Errorf("%d parts", len(p))
			}
		}},
		{"paragraphs first", para(20, "aaaa") + "\n\n" + para(20, "bbbb") + "\n\n" + para(20, "cccc"), 220, func(t *testing.T, p []string) {
			if len(p) != 2 || !strings.HasPrefix(p[1], "cccc") || strings.Contains(p[0], "cccc") {
				t.Errorf("%q", p)
			}
		}},
		{"sentences next", "First sentence is here. Second one follows! Third? " + para(10, "tail"), 40, func(t *testing.T, p []string) {
			if p[0] != "First sentence is here." || p[1] != "Second one follows! Third?" {
				t.Errorf("%q", p)
			}
		}},
		{"words last, links whole", "go " + strings.Repeat("see [the very long tracking page](https://track.example/a/b/c) now ", 4), 70, func(t *testing.T, p []string) {
			for _, x := range p {
				if strings.Count(x, "[") != strings.Count(x, "](") {
					t.Errorf("link cut: %q", x)
				}
			}
		}},
		{"code block kept whole", para(30, "intro") + "\n\n```go\nfunc main() {\n\n\tprintln(1)\n}\n```\n\n" + para(30, "outro"), 120, func(t *testing.T, p []string) {
			found := false
			for _, x := range p {
				if strings.Contains(x, "```go\nfunc main() {\n\n\tprintln(1)\n}\n```") {
					found = true
				}
			}
			if !found {
				t.Errorf("code block cut: %q", p)
			}
		}},
		{"oversized code block reopens its fence", "```python\n" + strings.Repeat("print('line')\n", 20) + "```", 100, func(t *testing.T, p []string) {
			for _, x := range p {
				if !strings.HasPrefix(x, "```python\n") || !strings.HasSuffix(x, "\n```") {
					t.Errorf("piece without its fence: %q", x)
				}
			}
		}},
		{"a giant word is cut", strings.Repeat("x", 250), 100, func(t *testing.T, p []string) {
			if len(p) != 3 || strings.Join(p, "") != strings.Repeat("x", 250) {
				t.Errorf("%q", p)
			}
		}},
		{"what is left of a giant word joins the words after it", strings.Repeat("x", 250) + " tail end", 100, func(t *testing.T, p []string) {
			if len(p) != 3 || p[2] != strings.Repeat("x", 50)+" tail end" {
				t.Errorf("%q", p)
			}
		}},
		{"runes not bytes", strings.Repeat("ü", 150), 100, func(t *testing.T, p []string) {
			if len(p) != 2 || len([]rune(p[0])) != 100 {
				t.Errorf("%d parts, first %d runes", len(p), len([]rune(p[0])))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := splitMessage(tc.text, tc.limit)
			for i, x := range parts {
				if tc.limit > 0 && len([]rune(x)) > tc.limit {
					t.Errorf("part %d is %d runes, over %d", i, len([]rune(x)), tc.limit)
				}
				if strings.TrimSpace(x) == "" {
					t.Errorf("part %d is empty", i)
				}
			}
			if strings.Join(strings.Fields(strings.Join(parts, " ")), "") != strings.Join(strings.Fields(tc.text), "") &&
				!strings.Contains(tc.name, "fence") {
				t.Errorf("parts lose text:\n%q", parts)
			}
			tc.check(t, parts)
		})
	}
}

func TestConvertFormat(t *testing.T) {
	md := "# Title\n**bold** and *italic* and __also bold__ and ~~gone~~, `**code**`, snake_case_name.\n" +
		"* item one\n> quoted\n[docs](https://d.example/x_y) ![chart](https://img.example/c.png) <https://plain.example>\n" +
		"```\n**not bold** in code\n```"
	wa := convertFormat(md, FormatWhatsApp)
	for _, want := range []string{"*Title*", "*bold* and _italic_ and *also bold* and ~gone~", "`**code**`", "snake_case_name",
		"- item one", "docs (https://d.example/x_y)", "https://img.example/c.png", "```\n**not bold** in code\n```"} {
		if !strings.Contains(wa, want) {
			t.Errorf("whatsapp lacks %q:\n%s", want, wa)
		}
	}
	plain := convertFormat(md, FormatPlain)
	for _, want := range []string{"Title\n", "bold and italic and also bold and gone, **code**, snake_case_name.", "- item one",
		"quoted", "docs (https://d.example/x_y)", "\n**not bold** in code"} {
		if !strings.Contains(plain, want) {
			t.Errorf("plain lacks %q:\n%s", want, plain)
		}
	}
	if strings.Contains(plain, "```") || strings.Contains(plain, "> quoted") {
		t.Errorf("plain keeps markup:\n%s", plain)
	}
	if convertFormat(md, FormatMarkdown) != md {
		t.Error("markdown must pass through")
	}
}

func TestChannelLimits(t *testing.T) {
	for ch, want := range map[string]int{"Channel::Whatsapp": 4096, "Channel::FacebookPage": 2000, "Channel::Instagram": 1000,
		"Channel::Telegram": 4096, "Channel::TwilioSms": 1600, "Channel::Sms": 320, "Channel::Line": 2000, "Channel::Api": 0,
		"Channel::WebWidget": 0} {
		if got := channelLimit(ch, FormatMarkdown); got != want {
			t.Errorf("%s: %d, want %d", ch, got, want)
		}
	}
	if channelLimit("Channel::Api", FormatWhatsApp) != 4096 {
		t.Error("an API inbox bridged to WhatsApp takes WhatsApp's limit")
	}
}

func TestPlanPutsFilesOnTheLastPartFifteenAtMost(t *testing.T) {
	b := New(Options{})
	var files []dify.AnswerFile
	for range 17 {
		files = append(files, dify.AnswerFile{URL: "https://dify/f", Type: "image"})
	}
	p := b.planAnswer(&store.Route{}, "Channel::Instagram", strings.Repeat("word ", 300), &dify.Answer{Files: files, MessageID: "m"}, "u")
	if len(p.Parts) != 3 {
		t.Fatalf("%d parts", len(p.Parts))
	}
	if p.Parts[0].Files != nil || len(p.Parts[1].Files) != 15 || len(p.Parts[2].Files) != 2 || p.Parts[2].Content != "" {
		t.Errorf("parts %+v", p.Parts)
	}
	for i, part := range p.Parts {
		if part.Step != partStep(i) {
			t.Errorf("part %d step %q", i, part.Step)
		}
	}
}

func TestResolveDifyURL(t *testing.T) {
	if got := resolveDifyURL("http://dify:5001/v1", "/files/tools/a.png?sign=x"); got != "http://dify:5001/files/tools/a.png?sign=x" {
		t.Error(got)
	}
	if got := resolveDifyURL("http://dify:5001/v1", "https://files.example/x.png"); got != "https://files.example/x.png" {
		t.Error(got)
	}
	if got := asAttachment("https://d/files/tools/a.png?sign=x%3D&nonce=n"); !strings.Contains(got, "as_attachment=true") || !strings.Contains(got, "sign=x%3D") {
		t.Error(got)
	}
}
