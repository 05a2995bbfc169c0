"""Script-injection vectors for model text: OWASP XSS cheat-sheet classes, mutation XSS, and
markdown constructs that parsers read differently, each placed in markdown contexts.

Every vector sets ``window.__pwned`` (or navigates to a ``javascript:`` URL that would) if
it ever runs, so a browser test only has to watch that one canary.
"""

from __future__ import annotations

RUN = "window.__pwned=1"

# One line each; `{js}` is the code that must never run.
BASE = [
    # plain tags and handlers
    "<script>{js}</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    '<img src=x onerror="{js}">',
    "<img src=x onerror={js}>",
    '<IMG SRC=x ONERROR="{js}">',
    '<img src="x" onerror  =  "{js}"',
    "<img src=x onerror=&#119;indow.__pwned=1>",
    "<img/src=x/onerror={js}>",
    '<img src=x:alert(1) onerror="{js}">',
    '<svg onload="{js}">',
    "<svg><script>{js}</script></svg>",
    '<body onload="{js}">',
    '<div onmouseover="{js}">hover</div>',
    '<details open ontoggle="{js}"><summary>x</summary>y</details>',
    '<input autofocus onfocus="{js}">',
    '<video><source onerror="{js}"></video>',
    '<audio src=x onerror="{js}">',
    '<marquee onstart="{js}">m</marquee>',
    '<style>@import "javascript:{js}";</style>',
    '<div style="background:url(javascript:{js})">x</div>',
    '<div style="width: expression({js})">x</div>',
    "<iframe src=javascript:{js}></iframe>",
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    '<object data="javascript:{js}"></object>',
    '<embed src="javascript:{js}">',
    '<form action="javascript:{js}"><button>go</button></form>',
    '<button formaction="javascript:{js}">b</button>',
    '<meta http-equiv="refresh" content="0;url=javascript:{js}">',
    '<base href="javascript:{js}//">',
    '<link rel=stylesheet href="javascript:{js}">',
    '<math><mtext><table><mglyph><style><img src=x onerror="{js}">',
    '<noscript><p title="</noscript><img src=x onerror={js}>">',
    '<svg><style><img src=x onerror="{js}"></style></svg>',
    '<template><img src=x onerror="{js}"></template>',
    '<textarea></textarea><img src=x onerror="{js}">',
    '<!--><img src=x onerror="{js}">-->',
    '<![CDATA[><img src=x onerror="{js}">]]>',
    '<? foo="><img src=x onerror={js}>">',
    '<x_y onmouseover="{js}">hi</x_y>',
    '<a href="javascript:{js}">raw link</a>',
    '<a href="jav&#x09;ascript:{js}">tab entity</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;{js}">entities</a>',
    '<a href="  javascript:{js}">spaces</a>',
    '<a href="data:text/html,<script>{js}</script>">data</a>',
    '<a href="vbscript:msgbox(1)">vb</a>',
    '<img src="javascript:{js}">',
    '<img srcset="x 1x" onerror="{js}">',
    # markdown links and images
    "[click](javascript:{js})",
    "[click](JaVaScRiPt:{js})",
    "[x](  javascript:{js})",
    "[x](<java\tscript:{js}>)",
    "[x](java&#x09;script:{js})",
    "[x](javascript&colon;{js})",
    "[x](&#x6A;avascript:{js})",
    "[x](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD0xPC9zY3JpcHQ+)",
    "[x](vbscript:msgbox(1))",
    "<javascript:{js}>",
    "![i](javascript:{js})",
    "![i](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    '![i](x "a\\" onerror=\\"{js}")',
    '![a](x$"onerror="{js}//$)',
    '[a](https://x.example/$"onmouseover="{js}//$)',
    '![$"onerror="{js}//$](x)',
    '[a](https://x.example "t"onmouseover="{js}")',
    # reference definitions and their quote tricks
    "[ref][1]\n\n[1]: javascript:{js}",
    "[ref]\n\n[ref]: <javascript:{js}> 'title'",
    '[r]\n\n[r]: https://x.example "x\\"><img src=x onerror={js}>"',
    "[1]:\n```\n<img src=x onerror={js}>\n```",
    '[a]: /u "\n```\n"\n<img src=x onerror={js}>\n```',
    "[)\n```\n# x)]: y\n<img src=x onerror={js}>\n```",
    # fences and their info strings
    '```py" onmouseover="{js}\ncode\n```',
    "```\ncode\n```~\n<img src=x onerror={js}>",
    "~~~ x\"onmouseover=\"{js}\ncode\n~~~",
    # code spans and autolinks read differently
    "| `a | <img src=x onerror={js}>` |\n|---|---|",
    "[a]$)~`<img src=x onerror={js}>`",
    "www.example.com/```py`](x) <svg onload={js}>`",
    "https://a.example/-->\\<svg onload={js}>",
    "x `\n<img src=x onerror={js}>| a | b |\n|---|---|\n` y",
    "- [ ] ~~~\"$$``<script>{js}</script>``",
    "- \n  ```\n\n<p>x</p>\n\n  ```\n\n- <script>{js}</script>",
    # math pasted into attributes, and TeX that makes links
    "$x$ <img src=y onerror=\"{js}\"> $y$",
    "$\\href{{javascript:{js}}}{{click}}$",
    "$$\\href{{javascript:{js}}}{{x}}$$",
    "\\(\\unicode{{<img src=x onerror={js}>}}\\)",
    "$x\n```\n$ <img src=x onerror={js}>",
    # broken and split tags
    "<img src=x\nonerror={js}>",
    '<img src="x" o\nnerror="{js}">',
    "<<script>{js}//<</script>",
    '<scr<script>ipt>{js}</script>',
    '<a href="https://x.example" onclick="{js}">a</a>',
    '<div><p title="</div><img src=x onerror={js}>">x</p></div>',
]

# Contexts the vectors are put in: `{}` is the vector.
CONTEXTS = [
    "{}",
    "Intro *text*.\n\n{}\n\nOutro with `code`.",
    "- item one\n- {}\n- item three",
    "1. first\n   {}",
    "> quoted: {}",
    "> > nested\n> {}",
    "| a | b |\n|---|---|\n| {} | cell |",
    "Text with a note.[^1]\n\n[^1]: {}",
    "```python\nprint('unclosed fence')\n{}",
    "Math $x^2$ then {} then $$y$$",
    "<details><summary>s</summary>\n\n{}\n\n</details>",
    "# Heading {}",
]


def vectors() -> list[str]:
    """Every base vector in every context (the corpus the tests use)."""
    filled = [vector.format(js=RUN) for vector in BASE]
    return [context.format(vector) for context in CONTEXTS for vector in filled]


def base_vectors() -> list[str]:
    return [vector.format(js=RUN) for vector in BASE]
