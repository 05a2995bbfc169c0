"""A deterministic ~20,000-character mixed-markdown answer, the load of the streaming benchmark."""

from __future__ import annotations

TARGET_CHARS = 20_000

_TOPICS = [
    ("Loading the data", "pandas", "读取数据时，先检查编码和分隔符，再决定是否分块读取。"),
    ("Cleaning columns", "dtypes", "清洗列名可以避免后续的拼写错误，也让代码更易读。"),
    ("Joining tables", "merge", "合并表格之前，请确认键的唯一性，否则行数会意外膨胀。"),
    ("Grouping and aggregating", "groupby", "分组聚合是数据分析中最常用的操作之一，性能差异很大。"),
    ("Plotting results", "matplotlib", "图表应该回答一个问题，而不是展示所有的数据。"),
    ("Testing the pipeline", "pytest", "测试数据管道时，小而具体的样本比大而随机的样本更有用。"),
    ("Caching expensive steps", "joblib", "缓存昂贵的步骤能节省时间，但要记得在输入变化时失效。"),
    ("Shipping to production", "docker", "部署到生产环境之前，固定依赖版本并记录运行环境。"),
]

_JAPANESE = "日本語の説明：この手順は小さなデータで先に試してください。"
_EMOJI = ["🚀", "✅", "⚠️", "📊", "🧪", "💡", "🐍", "🔧"]


def _python(n: int, tool: str) -> str:
    return (
        "```python\n"
        f"import {tool} as t{n}  # step {n}\n\n"
        f"def step_{n}(frame, *, limit={n * 10}):\n"
        f'    """Run step {n} on ``frame`` and return a new frame."""\n'
        "    rows = [row for row in frame if row.get('ok')]\n"
        f"    return rows[:limit]  # 保留前 {n * 10} 行\n"
        "```\n"
    )


def _javascript(n: int) -> str:
    return (
        "```javascript\n"
        f"const step{n} = async (rows) => {{\n"
        "  const kept = rows.filter((r) => r.ok && r.value > 0);\n"
        f"  console.log(`step {n}: ${{kept.length}} rows`);\n"
        "  return kept;\n"
        "};\n"
        "```\n"
    )


def _bash(n: int, tool: str) -> str:
    return (
        "```bash\n"
        f"pip install {tool}=={n}.0.*\n"
        f"python -m pipeline --step {n} --out results/step_{n}.parquet\n"
        "```\n"
    )


def _section(n: int) -> str:
    title, tool, chinese = _TOPICS[n % len(_TOPICS)]
    emoji = _EMOJI[n % len(_EMOJI)]
    code = [_python(n, tool), _javascript(n), _bash(n, tool)][n % 3]
    rows = "".join(f"| `{tool}.{name}{n}` | {n * k} | {k * 0.5:.1f} s | {'✅' if k % 2 else '❌'} |\n"
                   for k, name in enumerate(("read", "check", "write"), start=1))
    return (
        f"## {n + 1}. {title} {emoji}\n\n"
        f"This step uses **{tool}** to get from raw input to a *tidy* frame. Keep the `step_{n}` "
        f"function pure, and see [the {tool} docs](https://example.org/{tool}/{n}) for the details.\n\n"
        "### What to check\n\n"
        f"- the input has at least {n + 2} columns\n"
        "- no column is entirely empty\n"
        "  - empty strings count as missing\n"
        f"  - so does the literal `NA` ({emoji})\n"
        "- the row count matches the source\n\n"
        "### In order\n\n"
        f"1. Read the file with `{tool}`.\n"
        "2. Validate the schema.\n"
        "3. Transform, then write the result.\n\n"
        f"{code}\n"
        "| call | rows | time | ok |\n"
        "|---|---:|---:|:---:|\n"
        f"{rows}\n"
        f"> **Note** {emoji}: step {n + 1} is idempotent — running it twice gives the same output.\n"
        "> Rerun it freely.\n\n"
        f"{chinese}{_JAPANESE}\n\n"
        f"中文小结：第 {n + 1} 步完成后，数据应当已经可以用于下一步。{emoji}🎉\n\n"
    )


def make_answer(target: int = TARGET_CHARS) -> str:
    """Whole sections while they fit, a "further reading" list, then a closing line: exactly ``target`` chars."""
    head = "# A data pipeline, step by step 🧭\n\nHere is the whole plan, one section per step.\n\n"
    tail = "That's all — 祝你好运！ 👋\n"
    reading = "## Further reading 📚\n\n"
    parts = [head]
    n = 0
    while sum(map(len, parts)) + len(_section(n)) + len(reading) + len(tail) + 200 <= target:
        parts.append(_section(n))
        n += 1
    parts.append(reading)
    k = 0
    while True:
        item = f"- [Notes on step {k + 1}](https://example.org/notes/{k}) — 笔记 {k + 1}\n"
        if sum(map(len, parts)) + len(item) + 1 + len(tail) > target:
            break
        parts.append(item)
        k += 1
    parts.append("\n")
    room = target - sum(map(len, parts)) - len(tail) - 2  # the filler paragraph ends with a blank line
    words = "Each step above can be run on its own, and each one is safe to rerun. " * 4
    parts.append(words[:room].rsplit(" ", 1)[0].ljust(room, ".") + "\n\n" if room > 0 else "")
    return "".join(parts) + tail


ANSWER = make_answer()
