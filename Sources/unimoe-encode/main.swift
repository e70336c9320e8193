import Foundation
import Stages

exit(RoleMain.main("encode", CommandLine.arguments))
