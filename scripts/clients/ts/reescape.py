"""Works around a defect of @hey-api/openapi-ts (0.95.0; still in 0.99.0): it unescapes
every \\uXXXX of the code it prints (render-utils astToString), so a schema pattern with
\\u2028 or \\u2029 becomes a regex literal cut by a raw line terminator (the file does not
parse) and \\u0000-\\u001F become raw control characters. Writes such characters in the
generated .ts files under DIR back as \\uXXXX escapes (the same meaning in a regex
literal, a string or a comment) and prints one `warning:` line per file it changed."""

import pathlib
import re
import sys

RAW = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")

for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.ts")):
    text = path.read_text(encoding="utf-8")
    fixed, count = RAW.subn(lambda m: "\\u%04x" % ord(m.group()), text)
    if count:
        path.write_text(fixed, encoding="utf-8")
        print(f"warning: {path.name}: {count} raw control or line-separator characters in regex literals "
              "(the generator unescapes \\uXXXX; U+2028/U+2029 end the literal), written back as escapes")
