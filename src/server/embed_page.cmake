# Writes OUT, a C++ file defining leanlm::chat_page_html() from the bytes of IN (run at build time:
# an edit of the page rebuilds only this file). Bytes as hex, so no quoting rule of C++ can break.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," body "${hex}")
file(WRITE "${OUT}.tmp" "// Generated from src/server/chat_page.html by src/server/embed_page.cmake; do not edit.\n"
  "#include \"server/chat_page.h\"\n\nnamespace leanlm {\n\nnamespace {\nconst char kPage[] = {\n${body}\n};\n}  // namespace\n\n"
  "const std::string& chat_page_html() {\n  static const std::string page(kPage, ${bytes});\n  return page;\n}\n\n}  // namespace leanlm\n")
file(RENAME "${OUT}.tmp" "${OUT}")
