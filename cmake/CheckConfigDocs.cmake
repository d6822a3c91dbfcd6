# cmake -DBINARY=zerodiff-train -DDOC=docs/configuration.md -P CheckConfigDocs.cmake
# Fails when the generated key table in DOC differs from `zerodiff-train --print-config-reference`, i.e. when a
# config key (or its type, default or description) is not documented as the code defines it.
execute_process(COMMAND "${BINARY}" --print-config-reference OUTPUT_VARIABLE generated RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${BINARY} --print-config-reference failed (${rc})")
endif()
file(READ "${DOC}" doc)
string(FIND "${doc}" "${generated}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "${DOC} is out of date: regenerate its key table with\n"
                      "  build/bin/zerodiff-train --print-config-reference\n(expected table:)\n${generated}")
endif()
message(STATUS "${DOC} documents every config key")
